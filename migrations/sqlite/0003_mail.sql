-- The e-mail channel (issue 6), SQLite. Mirrors migrations/postgres/0003_mail.sql.

-- Every message the SMTP door answered 250 to, raw as received (with our
-- Received: header): the row is committed before the 250 (RFC 5321 §6.1).
-- `processed_at` stays NULL until the mail became a conversation message;
-- rows left NULL by a crash are processed again at start.
CREATE TABLE mail_inbound (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    envelope_id      TEXT NOT NULL,
    -- The envelope reverse-path; '' for the null sender <> (bounces).
    mail_from        TEXT NOT NULL,
    -- JSON array of the accepted recipients.
    recipients       TEXT NOT NULL,
    mailbox          TEXT NOT NULL,
    queue_id         TEXT NOT NULL,
    helo             TEXT NOT NULL,
    peer             TEXT NOT NULL,
    tls              INTEGER NOT NULL DEFAULT 0,
    message_id       TEXT,
    from_address     TEXT,
    from_name        TEXT,
    subject          TEXT NOT NULL,
    -- Why it must never be answered automatically (RFC 3834), or NULL.
    noise            TEXT,
    malformed        INTEGER NOT NULL DEFAULT 0,
    size             INTEGER NOT NULL,
    raw              BLOB NOT NULL,
    conversation_id  INTEGER REFERENCES conversations(id),
    received_at      INTEGER NOT NULL,
    processed_at     INTEGER
);
-- A sender that did not see our 250 (connection lost after the dot) sends
-- the same message again: same Message-ID, same sender, stored once.
-- Mail without a Message-ID (NULL) is never treated as a duplicate.
CREATE UNIQUE INDEX mail_inbound_dedupe ON mail_inbound (message_id, mail_from);
CREATE INDEX mail_inbound_conversation ON mail_inbound (conversation_id);
CREATE INDEX mail_inbound_pending ON mail_inbound (processed_at);

CREATE TABLE mail_attachments (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    inbound_id       INTEGER NOT NULL REFERENCES mail_inbound(id),
    conversation_id  INTEGER REFERENCES conversations(id),
    filename         TEXT NOT NULL,
    content_type     TEXT NOT NULL,
    size             INTEGER NOT NULL,
    bytes            BLOB NOT NULL
);
CREATE INDEX mail_attachments_conversation ON mail_attachments (conversation_id);
CREATE INDEX mail_attachments_inbound ON mail_attachments (inbound_id);

-- The Message-IDs of the mail we sent, for threading replies (In-Reply-To,
-- References) back into their conversation.
CREATE TABLE mail_message_ids (
    message_id       TEXT PRIMARY KEY,
    conversation_id  INTEGER NOT NULL REFERENCES conversations(id),
    outbox_id        INTEGER
);

-- Every mail ccu sends is stored here first, then delivered by the worker.
CREATE TABLE mail_outbox (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id  INTEGER REFERENCES conversations(id),
    -- ccu.{id}@{domain}, fixed before the first attempt.
    message_id       TEXT UNIQUE,
    to_address       TEXT NOT NULL,
    to_name          TEXT,
    subject          TEXT NOT NULL,
    body             TEXT NOT NULL,
    in_reply_to      TEXT,
    -- The References: chain, space-separated, without angle brackets.
    reference_ids    TEXT NOT NULL DEFAULT '',
    kind             TEXT NOT NULL CHECK (kind IN ('reply', 'acknowledgement', 'transcript', 'survey')),
    auto             INTEGER NOT NULL DEFAULT 0,
    state            TEXT NOT NULL CHECK (state IN ('pending', 'sending', 'sent', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    -- While 'sending': when another worker may assume this one died.
    lease_until      INTEGER,
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    sent_at          INTEGER,
    -- The caller's idempotency key (e.g. ack:{inbound id}): enqueued once.
    dedupe_key       TEXT UNIQUE
);
CREATE INDEX mail_outbox_due ON mail_outbox (state, next_attempt_at);
CREATE INDEX mail_outbox_conversation ON mail_outbox (conversation_id);

-- One row per delivery attempt; `outcome` is NULL while it runs.
CREATE TABLE mail_outbox_attempts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    outbox_id   INTEGER NOT NULL REFERENCES mail_outbox(id),
    attempt     INTEGER NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER,
    outcome     TEXT CHECK (outcome IN ('sent', 'transient', 'permanent', 'interrupted')),
    detail      TEXT,
    UNIQUE (outbox_id, attempt)
);
