package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/keyward/keyward/internal/rotation"
	"github.com/keyward/keyward/internal/vault"
)

// Rotations is the rotation engine's Store over SQL.
type Rotations struct{ db *DB }

// Rotations returns the rotation engine's Store on db.
func (db *DB) Rotations() *Rotations { return &Rotations{db: db} }

var _ rotation.Store = (*Rotations)(nil)

const rotationColumns = `id, cloud, account_id, user_name, step, phase, old_key_id, new_key_id, version,
	outcome, reason, attempt, lease_owner, started_at, step_at, finished_at`

func scanRotation(row scanner) (rotation.Record, error) {
	var r rotation.Record
	var oldKey, newKey, outcome, reason, owner sql.NullString
	var version, finished sql.NullInt64
	var started, stepAt int64
	err := row.Scan(&r.ID, &r.Identity.Cloud, &r.Identity.AccountID, &r.Identity.UserName, &r.Step, &r.Phase,
		&oldKey, &newKey, &version, &outcome, &reason, &r.Attempt, &owner, &started, &stepAt, &finished)
	if err != nil {
		return r, err
	}
	r.OldKeyID, r.NewKeyID, r.Outcome, r.Reason, r.LeaseOwner = oldKey.String, newKey.String, outcome.String, reason.String, owner.String
	r.Version = version.Int64
	r.StartedAt, r.StepAt, r.FinishedAt = time.UnixMicro(started).UTC(), time.UnixMicro(stepAt).UTC(), fromMicros(finished)
	return r, nil
}

func nullString(s string) sql.NullString { return sql.NullString{String: s, Valid: s != ""} }

// lockIdentity takes the identity's row lock for the rest of the transaction (PostgreSQL; SQLite's
// BEGIN IMMEDIATE has already serialised every writer) and returns its row id.
func (s *Rotations) lockIdentity(ctx context.Context, tx *Tx, id vault.Identity) (int64, error) {
	return s.db.Vault().identityID(ctx, tx, id, false, time.Time{})
}

// Begin implements rotation.Store. Under the identity's lock it checks that the key to replace is
// still current: another process may have finished a rotation of this identity since the caller
// looked, and finishing takes the same lock (see Save).
func (s *Rotations) Begin(ctx context.Context, r rotation.Record, owner string, leaseUntil time.Time) (rotation.Record, error) {
	err := s.db.inTx(ctx, func(tx *Tx) error {
		if r.OldKeyID == "" {
			return s.beginFirst(ctx, tx, &r, owner, leaseUntil)
		}
		identity, err := s.lockIdentity(ctx, tx, r.Identity)
		if err != nil {
			return err
		}
		// One statement: the rotation is written only if the key it replaces is still current.
		err = tx.queryRow(ctx, `INSERT INTO rotations (cloud, account_id, user_name, step, phase, old_key_id, new_key_id,
			version, attempt, lease_owner, lease_until, started_at, step_at)
			SELECT CAST($1 AS TEXT), CAST($2 AS TEXT), CAST($3 AS TEXT), CAST($4 AS TEXT), CAST($5 AS TEXT), CAST($6 AS TEXT),
				CAST($7 AS TEXT), CAST($8 AS BIGINT), CAST($9 AS BIGINT), CAST($10 AS TEXT), CAST($11 AS BIGINT),
				CAST($12 AS BIGINT), CAST($13 AS BIGINT)
			WHERE EXISTS (SELECT 1 FROM credential_versions WHERE identity_id = $14 AND state = 'current' AND access_key_id = $6)
			RETURNING id`,
			r.Identity.Cloud, r.Identity.AccountID, r.Identity.UserName, r.Step, r.Phase, nullString(r.OldKeyID),
			nullString(r.NewKeyID), sql.NullInt64{Int64: r.Version, Valid: r.Version != 0}, r.Attempt, owner,
			micros(leaseUntil), micros(r.StartedAt), micros(r.StepAt), identity).Scan(&r.ID)
		if errors.Is(err, sql.ErrNoRows) {
			return rotation.ErrStale
		}
		return err
	})
	if kind, _ := constraintViolation(err); kind == uniqueViolation {
		return r, fmt.Errorf("begin rotation of %s: %w", r.Identity, rotation.ErrBusy)
	}
	if err != nil {
		return r, fmt.Errorf("begin rotation of %s: %w", r.Identity, err)
	}
	return r, nil
}

// beginFirst begins the rotation that gives an identity its first key: only if it has no current
// version, under the identity's lock (the identity is created if need be).
func (s *Rotations) beginFirst(ctx context.Context, tx *Tx, r *rotation.Record, owner string, leaseUntil time.Time) error {
	identity, err := s.db.Vault().identityID(ctx, tx, r.Identity, true, r.StartedAt)
	if err != nil {
		return err
	}
	var n int
	if err := tx.queryRow(ctx, `SELECT COUNT(*) FROM credential_versions WHERE identity_id = $1 AND state IN ('current', 'pending')`,
		identity).Scan(&n); err != nil {
		return err
	}
	if n > 0 {
		return rotation.ErrStale
	}
	return tx.queryRow(ctx, `INSERT INTO rotations (cloud, account_id, user_name, step, phase, attempt, lease_owner,
		lease_until, started_at, step_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id`,
		r.Identity.Cloud, r.Identity.AccountID, r.Identity.UserName, r.Step, r.Phase, r.Attempt, owner,
		micros(leaseUntil), micros(r.StartedAt), micros(r.StepAt)).Scan(&r.ID)
}

// Open implements rotation.Store.
func (s *Rotations) Open(ctx context.Context, id vault.Identity) (rotation.Record, bool, error) {
	r, err := scanRotation(s.db.queryRow(ctx, `SELECT `+rotationColumns+` FROM rotations
		WHERE cloud = $1 AND account_id = $2 AND user_name = $3 AND finished_at IS NULL`, id.Cloud, id.AccountID, id.UserName))
	if errors.Is(err, sql.ErrNoRows) {
		return r, false, nil
	}
	if err != nil {
		return r, false, fmt.Errorf("open rotation of %s: %w", id, err)
	}
	return r, true, nil
}

// Resume implements rotation.Store.
func (s *Rotations) Resume(ctx context.Context, rotationID int64, owner string, now, leaseUntil time.Time, takeFrom string) error {
	return s.db.inTx(ctx, func(tx *Tx) error {
		res, err := tx.exec(ctx, `UPDATE rotations SET lease_owner = $1, lease_until = $2
			WHERE id = $3 AND finished_at IS NULL
			AND (lease_owner = $1 OR lease_owner = $5 OR lease_until IS NULL OR lease_until < $4)`,
			owner, micros(leaseUntil), rotationID, micros(now), takeFrom)
		if err != nil {
			return fmt.Errorf("resume rotation %d: %w", rotationID, err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return fmt.Errorf("resume rotation %d: %w", rotationID, rotation.ErrBusy)
		}
		return nil
	})
}

// Save implements rotation.Store.
func (s *Rotations) Save(ctx context.Context, r rotation.Record, owner string, leaseUntil time.Time) error {
	return s.db.inTx(ctx, func(tx *Tx) error {
		if !r.FinishedAt.IsZero() {
			if _, err := s.lockIdentity(ctx, tx, r.Identity); err != nil {
				return err
			}
		}
		res, err := tx.exec(ctx, `UPDATE rotations SET step = $1, phase = $2, new_key_id = $3, version = $4,
			outcome = $5, reason = $6, step_at = $7, finished_at = $8, lease_until = $9
			WHERE id = $10 AND lease_owner = $11 AND finished_at IS NULL`,
			r.Step, r.Phase, nullString(r.NewKeyID), sql.NullInt64{Int64: r.Version, Valid: r.Version != 0},
			nullString(r.Outcome), nullString(r.Reason), micros(r.StepAt), nullMicros(r.FinishedAt), micros(leaseUntil),
			r.ID, owner)
		if err != nil {
			return fmt.Errorf("save rotation %d of %s: %w", r.ID, r.Identity, err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return fmt.Errorf("save rotation %d of %s: %w", r.ID, r.Identity, rotation.ErrLeaseLost)
		}
		return nil
	})
}

// Get implements rotation.Store.
func (s *Rotations) Get(ctx context.Context, id int64) (rotation.Record, error) {
	r, err := scanRotation(s.db.queryRow(ctx, `SELECT `+rotationColumns+` FROM rotations WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return r, fmt.Errorf("rotation %d: %w", id, rotation.ErrNotFound)
	}
	return r, err
}

// LastFinished implements rotation.Store.
func (s *Rotations) LastFinished(ctx context.Context, id vault.Identity) (rotation.Record, bool, error) {
	r, err := scanRotation(s.db.queryRow(ctx, `SELECT `+rotationColumns+` FROM rotations
		WHERE cloud = $1 AND account_id = $2 AND user_name = $3 AND finished_at IS NOT NULL
		ORDER BY id DESC LIMIT 1`, id.Cloud, id.AccountID, id.UserName))
	if errors.Is(err, sql.ErrNoRows) {
		return r, false, nil
	}
	if err != nil {
		return r, false, fmt.Errorf("last rotation of %s: %w", id, err)
	}
	return r, true, nil
}

// Atomically implements rotation.Store: see DB.Atomically.
func (s *Rotations) Atomically(ctx context.Context, fn func(ctx context.Context) error) error {
	return s.db.Atomically(ctx, fn)
}

// States returns, in two statements, which identities have a rotation open now, and the last
// finished rotation of each identity whose last one failed: what an overview of thousands of
// identities needs without a query per identity.
func (s *Rotations) States(ctx context.Context) (open map[vault.Identity]bool, failed map[vault.Identity]rotation.Record, err error) {
	open, failed = map[vault.Identity]bool{}, map[vault.Identity]rotation.Record{}
	rows, err := s.db.query(ctx, `SELECT cloud, account_id, user_name FROM rotations WHERE finished_at IS NULL`)
	if err != nil {
		return nil, nil, fmt.Errorf("open rotations: %w", err)
	}
	for rows.Next() {
		var id vault.Identity
		if err := rows.Scan(&id.Cloud, &id.AccountID, &id.UserName); err != nil {
			rows.Close()
			return nil, nil, err
		}
		open[id] = true
	}
	rows.Close()
	rows, err = s.db.query(ctx, `SELECT `+rotationColumns+` FROM rotations r WHERE finished_at IS NOT NULL AND outcome = 'failed'
		AND id = (SELECT MAX(id) FROM rotations l WHERE l.cloud = r.cloud AND l.account_id = r.account_id AND l.user_name = r.user_name AND l.finished_at IS NOT NULL)`)
	if err != nil {
		return nil, nil, fmt.Errorf("failed rotations: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		rec, err := scanRotation(rows)
		if err != nil {
			return nil, nil, err
		}
		failed[rec.Identity] = rec
	}
	return open, failed, rows.Err()
}

// History returns an identity's rotations, newest first, at most limit.
func (s *Rotations) History(ctx context.Context, id vault.Identity, limit int) ([]rotation.Record, error) {
	rows, err := s.db.query(ctx, `SELECT `+rotationColumns+` FROM rotations WHERE cloud = $1 AND account_id = $2 AND user_name = $3
		ORDER BY id DESC LIMIT $4`, id.Cloud, id.AccountID, id.UserName, limit)
	if err != nil {
		return nil, fmt.Errorf("rotations of %s: %w", id, err)
	}
	defer rows.Close()
	var out []rotation.Record
	for rows.Next() {
		rec, err := scanRotation(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, rec)
	}
	return out, rows.Err()
}
