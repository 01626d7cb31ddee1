-- One row per rotation of one identity: the persisted state machine of the rotation engine. Each step
-- is written here before it runs (phase 'started') and after (phase 'done'), so a restart resumes.
-- At most one rotation per identity is open (finished_at IS NULL); the lease says which process is
-- working on it, so that two processes never rotate the same identity at once.
CREATE TABLE rotations (
    id           {{id}},
    cloud        TEXT NOT NULL,
    account_id   TEXT NOT NULL,
    user_name    TEXT NOT NULL,
    step         TEXT NOT NULL CHECK (step IN ('create', 'verify', 'promote', 'finished')),
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

CREATE UNIQUE INDEX rotations_one_open ON rotations (cloud, account_id, user_name) WHERE finished_at IS NULL;
CREATE INDEX rotations_by_identity ON rotations (cloud, account_id, user_name, id);
