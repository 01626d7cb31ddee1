-- Who may use Keyward. A team owns one cloud identity; its members (people and API keys) share its
-- key. Passwords are Argon2id hashes, API keys SHA-256 hashes of 256 random bits; TOTP seeds are
-- sealed blobs (sealed_blobs), never stored in the clear.
CREATE TABLE teams (
    name        TEXT PRIMARY KEY,
    cloud       TEXT NOT NULL,
    account_id  TEXT NOT NULL,
    user_name   TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    UNIQUE (cloud, account_id, user_name)
);

-- Users: local (password, optional TOTP) or signed in through the OIDC provider (subject).
-- token_generation grows on logout and on disabling: tokens carry the generation they were issued in.
CREATE TABLE users (
    name              TEXT PRIMARY KEY,
    role              TEXT NOT NULL,
    password_hash     TEXT,
    oidc_subject      TEXT UNIQUE,
    mfa_enrolled      BIGINT NOT NULL DEFAULT 0,
    disabled_at       BIGINT,
    token_generation  BIGINT NOT NULL DEFAULT 0,
    created_at        BIGINT NOT NULL
);

CREATE TABLE api_keys (
    name              TEXT PRIMARY KEY,
    key_id            TEXT NOT NULL UNIQUE,
    hash              TEXT NOT NULL,
    role              TEXT NOT NULL,
    cidrs             TEXT NOT NULL,
    expires_at        BIGINT,
    revoked_at        BIGINT,
    token_generation  BIGINT NOT NULL DEFAULT 0,
    created_at        BIGINT NOT NULL
);

-- principal is 'user:NAME' or 'apikey:NAME'.
CREATE TABLE team_members (
    team       TEXT NOT NULL REFERENCES teams (name) ON DELETE CASCADE,
    principal  TEXT NOT NULL,
    PRIMARY KEY (team, principal)
){{without_rowid}};

CREATE INDEX team_members_principal ON team_members (principal);

-- Failed logins, per user name (known or not: the same for both) and per source address.
CREATE TABLE login_failures (
    subject      TEXT PRIMARY KEY,
    failures     BIGINT NOT NULL,
    last_at      BIGINT NOT NULL,
    locked_until BIGINT
){{without_rowid}};

-- Small secrets Keyward keeps for itself (TOTP seeds), sealed under the key-encryption key like a
-- credential's secret, the name bound into the ciphertext.
CREATE TABLE sealed_blobs (
    name         TEXT PRIMARY KEY,
    kek_id       TEXT NOT NULL,
    wrapped_key  {{blob}} NOT NULL,
    ciphertext   {{blob}} NOT NULL,
    created_at   BIGINT NOT NULL
);

-- OIDC sign-ins under way: state, nonce and PKCE verifier, for ten minutes.
CREATE TABLE oidc_logins (
    state       TEXT PRIMARY KEY,
    nonce       TEXT NOT NULL,
    verifier    TEXT NOT NULL,
    expires_at  BIGINT NOT NULL
);
