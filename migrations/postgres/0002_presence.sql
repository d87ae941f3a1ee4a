-- The presence each operator last declared, so a restarted router puts
-- everyone back where they were (and offers in flight are made again).
CREATE TABLE operator_presence (
    user_id     BIGINT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    presence    TEXT NOT NULL,
    updated_at  BIGINT NOT NULL
);
