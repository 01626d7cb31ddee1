-- Web sessions: the cookie holds a random id, the database only its SHA-256, with the grant the
-- login gave (the principal and its generation: logout and disabling end the session at once).
CREATE TABLE ui_sessions (
    id_hash     TEXT PRIMARY KEY,
    subject     TEXT NOT NULL,
    generation  BIGINT NOT NULL,
    mfa         BOOLEAN NOT NULL,
    created_at  BIGINT NOT NULL,
    seen_at     BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX ui_sessions_expiry ON ui_sessions (expires_at);
