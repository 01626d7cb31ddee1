package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/keyward/keyward/internal/cluster"
)

// Cluster keeps the replicas sharing the database and their leaderships.
type Cluster struct{ db *DB }

// Cluster returns the cluster's Store on db.
func (db *DB) Cluster() *Cluster { return &Cluster{db: db} }

var _ cluster.Store = (*Cluster)(nil)

// Heartbeat implements cluster.Store.
func (s *Cluster) Heartbeat(ctx context.Context, r cluster.Replica, forgetBefore time.Time) error {
	return s.db.inTx(ctx, func(tx *Tx) error {
		if _, err := tx.exec(ctx, `INSERT INTO replicas (id, version, started_at, seen_at) VALUES ($1, $2, $3, $4)
			ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at, version = excluded.version`,
			r.ID, r.Version, micros(r.StartedAt), micros(r.SeenAt)); err != nil {
			return fmt.Errorf("replica heartbeat: %w", err)
		}
		_, err := tx.exec(ctx, `DELETE FROM replicas WHERE seen_at < $1`, micros(forgetBefore))
		return err
	})
}

// Leave implements cluster.Store.
func (s *Cluster) Leave(ctx context.Context, id string) error {
	return s.db.inTx(ctx, func(tx *Tx) error {
		_, err := tx.exec(ctx, `DELETE FROM replicas WHERE id = $1`, id)
		return err
	})
}

// Replicas implements cluster.Store.
func (s *Cluster) Replicas(ctx context.Context) ([]cluster.Replica, error) {
	rows, err := s.db.query(ctx, `SELECT id, version, started_at, seen_at FROM replicas ORDER BY id`)
	return collect(rows, err, func(rows scanner) (cluster.Replica, error) {
		var r cluster.Replica
		var started, seen int64
		err := rows.Scan(&r.ID, &r.Version, &started, &seen)
		r.StartedAt, r.SeenAt = time.UnixMicro(started).UTC(), time.UnixMicro(seen).UTC()
		return r, err
	})
}

// Lead implements cluster.Store: one statement, so that two replicas bidding at once are ordered by
// the row (its lock on PostgreSQL, the write lock on SQLite), and only one of them gets a row back.
func (s *Cluster) Lead(ctx context.Context, name, holder string, now, until time.Time) (int64, bool, error) {
	var fence int64
	err := s.db.inTx(ctx, func(tx *Tx) error {
		return tx.queryRow(ctx, `INSERT INTO leadership (name, holder, fence, since, expires_at) VALUES ($1, $2, 1, $3, $4)
			ON CONFLICT (name) DO UPDATE SET
				fence = CASE WHEN leadership.holder = excluded.holder THEN leadership.fence ELSE leadership.fence + 1 END,
				since = CASE WHEN leadership.holder = excluded.holder THEN leadership.since ELSE excluded.since END,
				holder = excluded.holder, expires_at = excluded.expires_at
			WHERE leadership.holder = excluded.holder OR leadership.expires_at < $3
			RETURNING fence`, name, holder, micros(now), micros(until)).Scan(&fence)
	})
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("lead %s: %w", name, err)
	}
	return fence, true, nil
}

// Resign implements cluster.Store.
func (s *Cluster) Resign(ctx context.Context, name, holder string) error {
	return s.db.inTx(ctx, func(tx *Tx) error {
		_, err := tx.exec(ctx, `UPDATE leadership SET expires_at = 0 WHERE name = $1 AND holder = $2`, name, holder)
		return err
	})
}

// Scheduler returns the rotation scheduler's term (ok false: nobody ever led it).
func (s *Cluster) Scheduler(ctx context.Context) (cluster.Term, bool, error) {
	return s.Term(ctx, cluster.Scheduler)
}

// Term implements cluster.Store.
func (s *Cluster) Term(ctx context.Context, name string) (cluster.Term, bool, error) {
	t := cluster.Term{Name: name}
	var since, expires int64
	var lastAt, lastStarted, unlisted, started, progress, done, known sql.NullInt64
	var lastBy, by sql.NullString
	err := s.db.queryRow(ctx, `SELECT holder, fence, since, expires_at, last_pass_at, last_pass_started_at, last_pass_by,
		last_pass_unlisted, pass_started_at, pass_progress_at, pass_done, pass_known, pass_by FROM leadership WHERE name = $1`, name).
		Scan(&t.Holder, &t.Fence, &since, &expires, &lastAt, &lastStarted, &lastBy, &unlisted, &started, &progress, &done, &known, &by)
	if errors.Is(err, sql.ErrNoRows) {
		return t, false, nil
	}
	if err != nil {
		return t, false, fmt.Errorf("read the %s leadership: %w", name, err)
	}
	t.Since, t.Expires, t.LastPassAt, t.LastPassBy = time.UnixMicro(since).UTC(), time.UnixMicro(expires).UTC(), fromMicros(lastAt), lastBy.String
	t.LastPassStartedAt, t.LastPassUnlisted = fromMicros(lastStarted), int(unlisted.Int64)
	if started.Valid {
		t.Running = &cluster.Running{StartedAt: fromMicros(started), ProgressAt: fromMicros(progress), Done: int(done.Int64),
			Known: int(known.Int64), By: by.String}
	}
	return t, true, nil
}

// RecordPass implements cluster.Store: a pass under way fills the pass_* columns; its end moves
// them to last_pass_* and empties them.
func (s *Cluster) RecordPass(ctx context.Context, name, holder string, fence int64, r cluster.PassReport) (bool, error) {
	q := `UPDATE leadership SET pass_started_at = $1, pass_progress_at = $2, pass_done = $3, pass_known = $4, pass_by = $5
		WHERE name = $6 AND holder = $5 AND fence = $7`
	args := []any{micros(r.StartedAt), micros(r.At), r.Done, r.Known, holder, name, fence}
	if r.Finished {
		q = `UPDATE leadership SET last_pass_started_at = $1, last_pass_at = $2, last_pass_unlisted = $3, last_pass_by = $4,
			pass_started_at = NULL, pass_progress_at = NULL, pass_done = NULL, pass_known = NULL, pass_by = NULL
			WHERE name = $5 AND holder = $4 AND fence = $6`
		args = []any{micros(r.StartedAt), micros(r.At), r.Unlisted, holder, name, fence}
	}
	var n int64
	err := s.db.inTx(ctx, func(tx *Tx) error {
		res, err := tx.exec(ctx, q, args...)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return false, fmt.Errorf("record the pass: %w", err)
	}
	return n == 1, nil
}
