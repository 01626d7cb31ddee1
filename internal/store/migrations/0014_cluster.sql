-- The serve processes sharing this database. Each writes its row every few seconds; one not seen for
-- rotation.lease is gone, and what it held (the scheduler, a rotation's lease) is taken over.
CREATE TABLE replicas (
    id          TEXT PRIMARY KEY,   -- the engine's owner name: "host/pid"
    version     TEXT NOT NULL,
    started_at  BIGINT NOT NULL,
    seen_at     BIGINT NOT NULL
);

-- Leadership of a job only one replica may run at a time (the rotation scheduler): a lease with a
-- fence, the number of the term, which grows by one each time another replica takes it. Work done
-- for a term is written with its fence, so a leader that lost its lease without knowing it cannot
-- write as the leader any more.
CREATE TABLE leadership (
    name          TEXT PRIMARY KEY,
    holder        TEXT NOT NULL,
    fence         BIGINT NOT NULL,
    since         BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    last_pass_at  BIGINT,
    last_pass_by  TEXT
);
