package store

import (
	"context"
	"fmt"
	"time"
)

// Purged says how many rows a purge removed, by kind.
type Purged struct {
	Notifications int64 // delivered outbox rows
	LoginFailures int64 // failure counts no lock depends on
	Rotations     int64 // finished rotation records (never an identity's last one)
}

// Purge removes what only grows and is no longer needed, older than before: delivered notifications,
// login-failure counts whose lock (if any) is over, and finished rotation records — except each
// identity's last one, which the engine's backoff after a failure reads. Audit records are never
// purged. One transaction; it calls nothing but the database.
func (db *DB) Purge(ctx context.Context, before, now time.Time) (Purged, error) {
	var p Purged
	err := db.inTx(ctx, func(tx *Tx) error {
		for _, d := range []struct {
			n     *int64
			query string
			args  []any
		}{
			{&p.Notifications, `DELETE FROM notification_outbox WHERE state = 'sent' AND sent_at < $1`, []any{micros(before)}},
			{&p.LoginFailures, `DELETE FROM login_failures WHERE last_at < $1 AND (locked_until IS NULL OR locked_until < $2)`,
				[]any{micros(before), micros(now)}},
			{&p.Rotations, `DELETE FROM rotations WHERE finished_at IS NOT NULL AND finished_at < $1 AND id NOT IN
				(SELECT MAX(id) FROM rotations WHERE finished_at IS NOT NULL GROUP BY cloud, account_id, user_name)`,
				[]any{micros(before)}},
		} {
			res, err := tx.exec(ctx, d.query, d.args...)
			if err != nil {
				return fmt.Errorf("purge: %w", err)
			}
			if *d.n, err = res.RowsAffected(); err != nil {
				return err
			}
		}
		return nil
	})
	return p, err
}
