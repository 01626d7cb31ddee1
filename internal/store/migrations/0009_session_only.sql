-- A session-only team's members and API keys get short-lived session credentials (STS
-- GetSessionToken) made with the team's key, never the long-lived key itself.
ALTER TABLE teams ADD COLUMN session_only BOOLEAN NOT NULL DEFAULT FALSE;
