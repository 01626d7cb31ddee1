package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/keyward/keyward/internal/notify"
)

// Outbox is the notification outbox over SQL.
type Outbox struct{ db *DB }

// Outbox returns the notification outbox on db.
func (db *DB) Outbox() *Outbox { return &Outbox{db: db} }

var _ notify.Outbox = (*Outbox)(nil)

// Enqueue implements notify.Outbox.
func (s *Outbox) Enqueue(ctx context.Context, ds []notify.Delivery, at time.Time) error {
	return s.db.inTx(ctx, func(tx *Tx) error {
		for _, d := range ds {
			notice, err := json.Marshal(d.Notice)
			if err != nil {
				return err
			}
			// Nothing reads its result: on PostgreSQL it travels with the next statement or COMMIT.
			if err := tx.execLater(ctx, `INSERT INTO notification_outbox (id, channel, destination, notice, state, attempts, next_at, created_at)
				VALUES ($1, $2, $3, $4, 'pending', 0, $5, $5) ON CONFLICT (id) DO NOTHING`,
				d.ID, d.Channel, d.Destination, string(notice), micros(at)); err != nil {
				return fmt.Errorf("queue notification %s: %w", d.ID, err)
			}
		}
		return nil
	})
}

// Claim implements notify.Outbox.
func (s *Outbox) Claim(ctx context.Context, owner string, now, leaseUntil time.Time, n int, takeFrom ...string) ([]notify.Delivery, error) {
	var out []notify.Delivery
	err := s.db.inTx(ctx, func(tx *Tx) error {
		args := []any{micros(now), n}
		free := "claimed_until IS NULL OR claimed_until < $1"
		if len(takeFrom) > 0 {
			marks := make([]string, len(takeFrom))
			for i, o := range takeFrom {
				args = append(args, o)
				marks[i] = fmt.Sprintf("$%d", len(args))
			}
			free += " OR claimed_by IN (" + strings.Join(marks, ", ") + ")"
		}
		rows, err := tx.query(ctx, `SELECT id, channel, destination, notice, attempts, created_at FROM notification_outbox
			WHERE state = 'pending' AND next_at <= $1 AND (`+free+`)
			ORDER BY next_at LIMIT $2`+s.skipLocked(), args...)
		out, err = collect(rows, err, func(rows scanner) (notify.Delivery, error) {
			var d notify.Delivery
			var notice string
			var created int64
			if err := rows.Scan(&d.ID, &d.Channel, &d.Destination, &notice, &d.Attempts, &created); err != nil {
				return d, err
			}
			d.CreatedAt = time.UnixMicro(created).UTC()
			return d, json.Unmarshal([]byte(notice), &d.Notice)
		})
		if err != nil {
			return fmt.Errorf("read the notification outbox: %w", err)
		}
		for _, d := range out {
			if _, err := tx.exec(ctx, `UPDATE notification_outbox SET claimed_by = $1, claimed_until = $2 WHERE id = $3`,
				owner, micros(leaseUntil), d.ID); err != nil {
				return err
			}
		}
		return nil
	})
	return out, err
}

// Sent implements notify.Outbox.
func (s *Outbox) Sent(ctx context.Context, id string, at time.Time) error {
	return s.db.inTx(ctx, func(tx *Tx) error {
		_, err := tx.exec(ctx, `UPDATE notification_outbox SET state = 'sent', sent_at = $1, attempts = attempts + 1,
			claimed_by = NULL, claimed_until = NULL, last_error = NULL WHERE id = $2`, micros(at), id)
		return err
	})
}

// Retry implements notify.Outbox.
func (s *Outbox) Retry(ctx context.Context, id string, lastError string, next time.Time) error {
	state := "pending"
	if next.IsZero() {
		state = "dead"
	}
	return s.db.inTx(ctx, func(tx *Tx) error {
		_, err := tx.exec(ctx, `UPDATE notification_outbox SET state = $1, next_at = $2, attempts = attempts + 1,
			claimed_by = NULL, claimed_until = NULL, last_error = $3 WHERE id = $4`, state, micros(next), lastError, id)
		return err
	})
}

// Pending implements notify.Outbox.
func (s *Outbox) Pending(ctx context.Context) (int, time.Time, error) {
	var n int
	var oldest sql.NullInt64
	err := s.db.queryRow(ctx, `SELECT COUNT(*), MIN(created_at) FROM notification_outbox WHERE state = 'pending'`).Scan(&n, &oldest)
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("read the notification outbox: %w", err)
	}
	return n, fromMicros(oldest), nil
}

// skipLocked makes replicas on PostgreSQL claim different rows instead of queueing for the same;
// SQLite's BEGIN IMMEDIATE lets one claimer in at a time anyway.
func (s *Outbox) skipLocked() string {
	if s.db.driver == Postgres {
		return " FOR UPDATE SKIP LOCKED"
	}
	return ""
}
