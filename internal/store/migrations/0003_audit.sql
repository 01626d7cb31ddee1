-- Keyward's own signing keys (the audit trail's checkpoint signer first): the public half in the
-- clear, the private half sealed under the key-encryption key exactly like a secret.
CREATE TABLE signing_keys (
    id           TEXT PRIMARY KEY,
    purpose      TEXT NOT NULL,
    public_key   {{blob}} NOT NULL,
    kek_id       TEXT NOT NULL,
    wrapped_key  {{blob}} NOT NULL,
    ciphertext   {{blob}} NOT NULL,
    created_at   BIGINT NOT NULL
);

-- The audit trail: append-only, one row per event, numbered without gaps from 1. Each row carries
-- the SHA-256 of the previous row (prev_hash) and its own (hash), so a changed, removed, inserted or
-- reordered row breaks the chain. detail is a JSON object of strings, never secret material.
CREATE TABLE audit_events (
    seq         {{int_pk}},
    time        BIGINT NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    target      TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    source_ip   TEXT NOT NULL,
    request_id  TEXT NOT NULL,
    detail      TEXT NOT NULL,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL
);

-- Signed checkpoints: "the trail up to seq ends in hash", signed by an audit signing key. A trail cut
-- short of a checkpoint, or rewritten before one, no longer matches it.
CREATE TABLE audit_checkpoints (
    seq        BIGINT NOT NULL,
    hash       TEXT NOT NULL,
    time       BIGINT NOT NULL,
    key_id     TEXT NOT NULL REFERENCES signing_keys (id),
    signature  {{blob}} NOT NULL,
    PRIMARY KEY (seq, key_id)
);

-- How far each sink (a file, CloudWatch Logs) has been sent the trail: records after seq are its
-- backlog. A sink that is down keeps its place and catches up later.
CREATE TABLE audit_sink_cursors (
    sink  TEXT PRIMARY KEY,
    seq   BIGINT NOT NULL
);
