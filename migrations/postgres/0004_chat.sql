-- Web chat: resume tokens (hashed) and satisfaction ratings; the router's
-- own offer number, so a console can answer an offer it learnt from the store.
CREATE TABLE chat_sessions (
    token_hash       TEXT PRIMARY KEY,
    conversation_id  BIGINT NOT NULL REFERENCES conversations(id),
    created_at       BIGINT NOT NULL,
    expires_at       BIGINT NOT NULL
);
CREATE INDEX chat_sessions_conversation ON chat_sessions (conversation_id);

CREATE TABLE ratings (
    conversation_id  BIGINT PRIMARY KEY REFERENCES conversations(id),
    score            INTEGER NOT NULL CHECK (score BETWEEN 1 AND 5),
    comment          TEXT,
    at               BIGINT NOT NULL
);

ALTER TABLE offers ADD COLUMN router_offer_id BIGINT;
