package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/keyward/keyward/internal/rotation"
)

// Leaks is the record of exposed keys over SQL.
type Leaks struct{ db *DB }

// Leaks returns the exposed keys' Store on db.
func (db *DB) Leaks() *Leaks { return &Leaks{db: db} }

var _ rotation.LeakStore = (*Leaks)(nil)

const leakColumns = `access_key_id, cloud, account_id, user_name, managed, reported_by, via, reason, reported_at, resolved_at`

// RecordLeak implements rotation.LeakStore: the first report of a key is kept; a later one is not an
// error (first says which it was).
func (s *Leaks) RecordLeak(ctx context.Context, l rotation.Leak) (first bool, err error) {
	err = s.db.inTx(ctx, func(tx *Tx) error {
		res, err := tx.exec(ctx, `INSERT INTO leaks (`+leakColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
			ON CONFLICT (access_key_id) DO NOTHING`,
			l.AccessKeyID, l.Identity.Cloud, l.Identity.AccountID, l.Identity.UserName, l.Managed, l.ReportedBy, l.Via, l.Reason,
			l.ReportedAt.UnixMicro(), nullMicros(l.ResolvedAt))
		if err != nil {
			return fmt.Errorf("record the leak of %s: %w", l.AccessKeyID, err)
		}
		n, err := res.RowsAffected()
		first = n == 1
		return err
	})
	return first, err
}

// OpenLeaks implements rotation.LeakStore: the leaks whose key is not gone yet, by key id.
func (s *Leaks) OpenLeaks(ctx context.Context) (map[string]rotation.Leak, error) {
	rows, err := s.db.query(ctx, `SELECT `+leakColumns+` FROM leaks WHERE resolved_at IS NULL`)
	if err != nil {
		return nil, fmt.Errorf("read leaks: %w", err)
	}
	defer rows.Close()
	out := map[string]rotation.Leak{}
	for rows.Next() {
		l, err := scanLeak(rows)
		if err != nil {
			return nil, fmt.Errorf("read leaks: %w", err)
		}
		out[l.AccessKeyID] = l
	}
	return out, rows.Err()
}

// Leak returns the record of one key's leak. Errors: rotation.ErrNotFound.
func (s *Leaks) Leak(ctx context.Context, keyID string) (rotation.Leak, error) {
	l, err := scanLeak(s.db.queryRow(ctx, `SELECT `+leakColumns+` FROM leaks WHERE access_key_id = $1`, keyID))
	if err == sql.ErrNoRows {
		return l, fmt.Errorf("leak of %s: %w", keyID, rotation.ErrNotFound)
	}
	return l, err
}

// ResolveLeak implements rotation.LeakStore: the key is gone (in the unit of work ctx carries).
func (s *Leaks) ResolveLeak(ctx context.Context, keyID string, at time.Time) error {
	return s.db.inTx(ctx, func(tx *Tx) error {
		_, err := tx.exec(ctx, `UPDATE leaks SET resolved_at = $1 WHERE access_key_id = $2 AND resolved_at IS NULL`, at.UnixMicro(), keyID)
		return err
	})
}

func scanLeak(row scanner) (rotation.Leak, error) {
	var l rotation.Leak
	var reported int64
	var resolved sql.NullInt64
	err := row.Scan(&l.AccessKeyID, &l.Identity.Cloud, &l.Identity.AccountID, &l.Identity.UserName, &l.Managed, &l.ReportedBy, &l.Via,
		&l.Reason, &reported, &resolved)
	l.ReportedAt, l.ResolvedAt = time.UnixMicro(reported).UTC(), fromMicros(resolved)
	return l, err
}
