-- The scheduler's pass in progress, as its leader reports it every few seconds: when it started,
-- how many users it has visited of how many it knows so far, and when it last made progress. A long
-- pass that makes progress is healthy; one whose progress stops is not (rotation.Passes.Health).
-- Every replica reads these, so that each tells the same truth in /v1/status and /healthz/rotation.
ALTER TABLE leadership ADD COLUMN last_pass_started_at BIGINT;
ALTER TABLE leadership ADD COLUMN last_pass_unlisted BIGINT;
ALTER TABLE leadership ADD COLUMN pass_started_at BIGINT;
ALTER TABLE leadership ADD COLUMN pass_progress_at BIGINT;
ALTER TABLE leadership ADD COLUMN pass_done BIGINT;
ALTER TABLE leadership ADD COLUMN pass_known BIGINT;
ALTER TABLE leadership ADD COLUMN pass_by TEXT;
