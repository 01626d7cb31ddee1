-- The notification outbox: one row per delivery (a notice to one destination of one channel),
-- written in the transaction of the step it tells of, so that a crash never loses one. id is derived
-- from the notice and the destination: the same notice is never queued twice for one destination,
-- and receivers get it as the idempotency id, the same on every retry.
CREATE TABLE notification_outbox (
    id            TEXT PRIMARY KEY,
    channel       TEXT NOT NULL,
    destination   TEXT NOT NULL,
    notice        TEXT NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'dead')),
    attempts      BIGINT NOT NULL,
    next_at       BIGINT NOT NULL,
    claimed_by    TEXT,
    claimed_until BIGINT,
    last_error    TEXT,
    created_at    BIGINT NOT NULL,
    sent_at       BIGINT
);

CREATE INDEX notification_outbox_due ON notification_outbox (state, next_at);
