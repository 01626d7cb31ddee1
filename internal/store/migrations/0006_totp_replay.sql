-- The last TOTP time step a user's code was accepted for: a code is accepted once (RFC 6238 §5.2),
-- so one seen over a shoulder or replayed from a log cannot sign in again within its window.
ALTER TABLE users ADD COLUMN totp_last_step BIGINT;
