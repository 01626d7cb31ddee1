-- The last read of each account's inventory (every IAM user, managed or not, with its keys' ids,
-- ages and last use; never a secret), as one JSON document per account, and the compliance report's
-- daily snapshot (its summary) for the trend.
CREATE TABLE inventory (
    account_id TEXT PRIMARY KEY,
    read_at    BIGINT NOT NULL,
    document   TEXT NOT NULL
);

CREATE TABLE compliance_snapshots (
    day        TEXT PRIMARY KEY,
    taken_at   BIGINT NOT NULL,
    summary    TEXT NOT NULL
);
