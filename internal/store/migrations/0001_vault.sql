-- The credential vault: identities and the versions of their access keys.
-- Times are Unix microseconds (UTC). Secret material is only ever stored sealed: wrapped_key is the
-- data key wrapped by the key-encryption key kek_id, ciphertext is the secret under that data key.
-- Both are NULL once a version is destroyed (crypto-shredding).
-- On SQLite, credential_versions is a WITHOUT ROWID table: the rows live in the primary-key b-tree,
-- so a write touches one page fewer (and a durable put costs less beyond its fsync).

CREATE TABLE identities (
    id          {{id}},
    cloud       TEXT NOT NULL,
    account_id  TEXT NOT NULL,
    user_name   TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    UNIQUE (cloud, account_id, user_name)
);

CREATE TABLE credential_versions (
    identity_id    BIGINT NOT NULL REFERENCES identities (id),
    version        BIGINT NOT NULL,
    access_key_id  TEXT NOT NULL UNIQUE,
    state          TEXT NOT NULL CHECK (state IN ('pending', 'current', 'previous', 'inactive', 'destroyed')),
    origin         TEXT NOT NULL CHECK (origin IN ('imported', 'created', 'adopted')),
    kek_id         TEXT,
    wrapped_key    {{blob}},
    ciphertext     {{blob}},
    created_at     BIGINT NOT NULL,
    current_at     BIGINT,
    previous_at    BIGINT,
    inactive_at    BIGINT,
    destroyed_at   BIGINT,
    PRIMARY KEY (identity_id, version),
    CHECK ((wrapped_key IS NULL) = (ciphertext IS NULL)),
    CHECK ((kek_id IS NULL) = (wrapped_key IS NULL)),
    CHECK (origin = 'adopted' OR state = 'destroyed' OR ciphertext IS NOT NULL),
    CHECK (state <> 'destroyed' OR ciphertext IS NULL)
){{without_rowid}};

-- At most one current version per identity, whatever the writers do.
CREATE UNIQUE INDEX credential_versions_one_current ON credential_versions (identity_id) WHERE state = 'current';
