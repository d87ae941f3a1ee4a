-- ccu foundation schema (SQLite). Timestamps are Unix milliseconds (UTC),
-- ids are 64-bit integers; the PostgreSQL schema mirrors this one.

CREATE TABLE organizations (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    is_city     INTEGER NOT NULL DEFAULT 0,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE users (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    username         TEXT NOT NULL UNIQUE,
    display_name     TEXT NOT NULL,
    password_hash    TEXT NOT NULL,
    role             TEXT NOT NULL CHECK (role IN ('operator', 'supervisor', 'admin')),
    organization_id  TEXT NOT NULL REFERENCES organizations(id),
    languages        TEXT NOT NULL DEFAULT '["it"]',
    capacity         TEXT NOT NULL DEFAULT '{}',
    active           INTEGER NOT NULL DEFAULT 1,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);

CREATE TABLE user_skills (
    user_id  INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    skill    TEXT NOT NULL,
    level    INTEGER NOT NULL CHECK (level BETWEEN 1 AND 10),
    PRIMARY KEY (user_id, skill)
);

-- Extra organizations a user may see besides their own.
CREATE TABLE user_grants (
    user_id          INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    organization_id  TEXT NOT NULL REFERENCES organizations(id),
    PRIMARY KEY (user_id, organization_id)
);

CREATE TABLE sessions (
    token_hash  TEXT PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    address     TEXT
);
CREATE INDEX sessions_expiry ON sessions (expires_at);

CREATE TABLE queues (
    id               TEXT PRIMARY KEY,
    organization_id  TEXT NOT NULL REFERENCES organizations(id),
    name             TEXT NOT NULL,
    priority         INTEGER NOT NULL,
    settings         TEXT NOT NULL,
    updated_at       INTEGER NOT NULL
);

CREATE TABLE queue_shares (
    queue_id         TEXT NOT NULL REFERENCES queues(id) ON DELETE CASCADE,
    organization_id  TEXT NOT NULL REFERENCES organizations(id),
    PRIMARY KEY (queue_id, organization_id)
);

CREATE TABLE contacts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT,
    email       TEXT,
    phone       TEXT,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX contacts_email ON contacts (email);
CREATE INDEX contacts_phone ON contacts (phone);

CREATE TABLE reference_counters (
    prefix  TEXT NOT NULL,
    year    INTEGER NOT NULL,
    value   INTEGER NOT NULL,
    PRIMARY KEY (prefix, year)
);

CREATE TABLE conversations (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    reference        TEXT NOT NULL UNIQUE,
    organization_id  TEXT NOT NULL REFERENCES organizations(id),
    queue_id         TEXT NOT NULL REFERENCES queues(id),
    channel          TEXT NOT NULL CHECK (channel IN ('voice', 'chat', 'email', 'webform')),
    state            TEXT NOT NULL CHECK (state IN ('queued', 'offered', 'assigned', 'wrap_up', 'closed', 'abandoned')),
    contact_id       INTEGER REFERENCES contacts(id),
    operator_id      INTEGER REFERENCES users(id),
    language         TEXT NOT NULL,
    subject          TEXT,
    created_at       INTEGER NOT NULL,
    enqueued_at      INTEGER NOT NULL,
    assigned_at      INTEGER,
    closed_at        INTEGER,
    updated_at       INTEGER NOT NULL
);
CREATE INDEX conversations_org ON conversations (organization_id, id);
CREATE INDEX conversations_queue_state ON conversations (queue_id, state);
CREATE INDEX conversations_operator ON conversations (operator_id, state);
CREATE INDEX conversations_contact ON conversations (contact_id);

-- Append-only: every state change of a conversation.
CREATE TABLE conversation_events (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id  INTEGER NOT NULL REFERENCES conversations(id),
    at               INTEGER NOT NULL,
    kind             TEXT NOT NULL,
    queue_id         TEXT,
    operator_id      INTEGER,
    data             TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX conversation_events_conversation ON conversation_events (conversation_id, id);
CREATE INDEX conversation_events_at ON conversation_events (at);
CREATE TRIGGER conversation_events_no_update BEFORE UPDATE ON conversation_events
BEGIN SELECT RAISE(ABORT, 'conversation_events is append-only'); END;
CREATE TRIGGER conversation_events_no_delete BEFORE DELETE ON conversation_events
BEGIN SELECT RAISE(ABORT, 'conversation_events is append-only'); END;

CREATE TABLE messages (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id  INTEGER NOT NULL REFERENCES conversations(id),
    at               INTEGER NOT NULL,
    direction        TEXT NOT NULL CHECK (direction IN ('inbound', 'outbound', 'internal')),
    author_user_id   INTEGER REFERENCES users(id),
    body             TEXT NOT NULL,
    content_type     TEXT NOT NULL DEFAULT 'text/plain',
    -- The sender's own id for the message, so a retry is stored once.
    client_id        TEXT,
    UNIQUE (conversation_id, client_id)
);
CREATE INDEX messages_conversation ON messages (conversation_id, id);

CREATE TABLE offers (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id  INTEGER NOT NULL REFERENCES conversations(id),
    operator_id      INTEGER NOT NULL REFERENCES users(id),
    queue_id         TEXT NOT NULL,
    offered_at       INTEGER NOT NULL,
    expires_at       INTEGER NOT NULL,
    outcome          TEXT CHECK (outcome IN ('accepted', 'declined', 'missed', 'withdrawn')),
    decided_at       INTEGER
);
CREATE INDEX offers_conversation ON offers (conversation_id);
CREATE INDEX offers_open ON offers (outcome, expires_at);

CREATE TABLE wrap_ups (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id  INTEGER NOT NULL REFERENCES conversations(id),
    operator_id      INTEGER NOT NULL REFERENCES users(id),
    code             TEXT NOT NULL,
    note             TEXT,
    at               INTEGER NOT NULL
);
CREATE INDEX wrap_ups_conversation ON wrap_ups (conversation_id);

CREATE TABLE audit_log (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    at             INTEGER NOT NULL,
    actor_user_id  INTEGER,
    address        TEXT,
    action         TEXT NOT NULL,
    target         TEXT,
    detail         TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_at ON audit_log (at);
