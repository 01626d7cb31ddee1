-- Records appended on PostgreSQL wait here, committed in the transaction of the change they record,
-- until the sealer numbers and chains them into audit_events in the order they committed (see
-- docs/ARCHITECTURE.md, "The audit trail"): appenders then never wait for each other. On SQLite, whose
-- writer holds the only write lock anyway, records go straight into the chain and this table stays
-- empty.
CREATE TABLE audit_pending (
    id          {{id}},
    time        BIGINT NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    target      TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    source_ip   TEXT NOT NULL,
    request_id  TEXT NOT NULL,
    detail      TEXT NOT NULL
);
