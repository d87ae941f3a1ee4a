-- Voice messages (issue 5): what a caller said after the tone when the
-- queue's maximum wait offered voicemail, as a 16-bit PCM WAV file
-- (8 kHz mono), kept with the conversation for the operator who calls back.
CREATE TABLE voice_messages (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id  INTEGER NOT NULL REFERENCES conversations(id),
    at               INTEGER NOT NULL,
    duration_ms      INTEGER NOT NULL,
    wav              BLOB NOT NULL
);
CREATE INDEX voice_messages_conversation ON voice_messages (conversation_id);
