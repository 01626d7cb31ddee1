-- Delivery becomes a step of the rotation protocol, between verify and promote: the new key is put
-- into every target of its identity (Secrets Manager, Parameter Store) before it is promoted.
{{postgres}}
ALTER TABLE rotations DROP CONSTRAINT rotations_step_check;
ALTER TABLE rotations ADD CONSTRAINT rotations_step_check CHECK (step IN ('create', 'verify', 'deliver', 'promote', 'finished'));
{{end}}
{{sqlite}}
-- SQLite cannot change a CHECK constraint: the table is made again, its rows and ids kept.
CREATE TABLE rotations_new (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    cloud        TEXT NOT NULL,
    account_id   TEXT NOT NULL,
    user_name    TEXT NOT NULL,
    step         TEXT NOT NULL CHECK (step IN ('create', 'verify', 'deliver', 'promote', 'finished')),
    phase        TEXT NOT NULL CHECK (phase IN ('started', 'done')),
    old_key_id   TEXT,
    new_key_id   TEXT,
    version      BIGINT,
    outcome      TEXT CHECK (outcome IN ('rotated', 'failed')),
    reason       TEXT,
    attempt      BIGINT NOT NULL,
    lease_owner  TEXT,
    lease_until  BIGINT,
    started_at   BIGINT NOT NULL,
    step_at      BIGINT NOT NULL,
    finished_at  BIGINT,
    CHECK ((finished_at IS NULL) = (outcome IS NULL))
);
INSERT INTO rotations_new SELECT * FROM rotations;
DROP TABLE rotations;
ALTER TABLE rotations_new RENAME TO rotations;
CREATE UNIQUE INDEX rotations_one_open ON rotations (cloud, account_id, user_name) WHERE finished_at IS NULL;
CREATE INDEX rotations_by_identity ON rotations (cloud, account_id, user_name, id);
{{end}}

-- Which key each target of each identity was last given: what `keyward status` shows without
-- asking AWS. Names of targets, never their content.
CREATE TABLE deliveries (
    cloud         TEXT NOT NULL,
    account_id    TEXT NOT NULL,
    user_name     TEXT NOT NULL,
    target        TEXT NOT NULL,
    access_key_id TEXT NOT NULL,
    delivered_at  BIGINT NOT NULL,
    PRIMARY KEY (cloud, account_id, user_name, target)
);
