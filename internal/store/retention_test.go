package store

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/testenv"
)

// TestPurge: delivered notifications, spent login-failure counts and finished rotations older than
// the horizon go; what is pending, still locking, recent, open, or an identity's last rotation stays.
func TestPurge(t *testing.T) {
	testenv.ForEachDatabase(t, func(t *testing.T, d testenv.Database) {
		ctx := context.Background()
		db := mustOpen(t, d)
		now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
		old, recent := micros(now.Add(-100*24*time.Hour)), micros(now.Add(-time.Hour))
		exec := func(q string, args ...any) {
			t.Helper()
			if _, err := db.sql.ExecContext(ctx, q, args...); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
		outbox := `INSERT INTO notification_outbox (id, channel, destination, notice, state, attempts, next_at, created_at, sent_at)
			VALUES ($1, 'webhook', 'ops', '{}', $2, 1, 0, $3, $4)`
		exec(outbox, "sent-old", "sent", old, old)
		exec(outbox, "sent-recent", "sent", recent, recent)
		exec(outbox, "pending-old", "pending", old, nil)
		exec(outbox, "dead-old", "dead", old, nil)
		failures := `INSERT INTO login_failures (subject, failures, last_at, locked_until) VALUES ($1, 3, $2, $3)`
		exec(failures, "user:spent", old, nil)
		exec(failures, "user:locked", old, micros(now.Add(time.Hour)))
		exec(failures, "user:recent", recent, nil)
		rotation := `INSERT INTO rotations (cloud, account_id, user_name, step, phase, outcome, attempt, started_at, step_at, finished_at)
			VALUES ('aws', '123456789012', $1, $2, 'done', $3, 1, $4, $4, $5)`
		exec(rotation, "alice", "finished", "failed", old, old)
		exec(rotation, "alice", "finished", "rotated", old, old) // alice's last: kept
		exec(rotation, "bob", "finished", "rotated", old, old)   // bob's only: kept
		exec(rotation, "bob", "finished", "rotated", recent, recent)
		exec(rotation, "carol", "finished", "failed", old, old)
		exec(rotation, "carol", "finished", "failed", old, old)
		exec(rotation, "carol", "verify", nil, old, nil) // open: kept
		p, err := db.Purge(ctx, now.Add(-90*24*time.Hour), now)
		if err != nil {
			t.Fatal(err)
		}
		if p != (Purged{Notifications: 1, LoginFailures: 1, Rotations: 3}) {
			t.Fatalf("purged %+v", p)
		}
		left := func(q string) string {
			rows, err := db.sql.QueryContext(ctx, q)
			out, err := collect(rows, err, scanString)
			if err != nil {
				t.Fatal(err)
			}
			return fmt.Sprint(out)
		}
		if got := left(`SELECT id FROM notification_outbox ORDER BY id`); got != "[dead-old pending-old sent-recent]" {
			t.Errorf("outbox left: %s", got)
		}
		if got := left(`SELECT subject FROM login_failures ORDER BY subject`); got != "[user:locked user:recent]" {
			t.Errorf("login failures left: %s", got)
		}
		if got := left(`SELECT user_name || ':' || step FROM rotations ORDER BY id`); got != "[alice:finished bob:finished carol:finished carol:verify]" {
			t.Errorf("rotations left: %s", got)
		}
	})
}
