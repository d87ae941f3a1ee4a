-- Voice channel (issue 5): one SIP account per operator for their phones.
-- Only the digest HA1 values are kept (RFC 7616 §3.4.2: H(username:realm:password)),
-- one per algorithm, never the password; the realm they were made for is
-- kept too, so a change of sip.registrar.realm is detected instead of
-- silently failing every REGISTER.
CREATE TABLE sip_accounts (
    user_id       BIGINT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    sip_username  TEXT NOT NULL UNIQUE,
    realm         TEXT NOT NULL,
    ha1_md5       TEXT NOT NULL,
    ha1_sha256    TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
