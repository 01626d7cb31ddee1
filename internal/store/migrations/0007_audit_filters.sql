-- The audit trail is read a page at a time through filters (GET /v1/audit): each filter has an index
-- that yields its records in the trail's order, so a page costs what it returns, not the trail's
-- length. Actions are compared byte by byte ({{collate_c}}), so that a prefix ("auth.") is a range.
CREATE INDEX audit_events_actor ON audit_events (actor, seq);
CREATE INDEX audit_events_target ON audit_events (target, seq);
CREATE INDEX audit_events_action ON audit_events (action{{collate_c}}, seq);
CREATE INDEX audit_events_time ON audit_events (time);
