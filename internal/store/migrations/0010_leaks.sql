-- Keys reported as exposed (keyward leak, POST /v1/leaks, AWS Health's AWS_RISK_CREDENTIALS_EXPOSED):
-- the explicit rule that lets the engine deactivate such a key at once (safety rule 3). A leak is
-- resolved when its key is gone. Owner columns are empty when the key's owner is unknown.
CREATE TABLE leaks (
    access_key_id TEXT PRIMARY KEY,
    cloud         TEXT NOT NULL,
    account_id    TEXT NOT NULL,
    user_name     TEXT NOT NULL,
    managed       BOOLEAN NOT NULL,
    reported_by   TEXT NOT NULL,
    via           TEXT NOT NULL,
    reason        TEXT NOT NULL,
    reported_at   BIGINT NOT NULL,
    resolved_at   BIGINT
);
CREATE INDEX leaks_open ON leaks (resolved_at);
