package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/keyward/keyward/internal/web"
)

// UISessions keeps the web's sessions.
type UISessions struct{ db *DB }

// UISessions returns the web sessions' Store on db.
func (db *DB) UISessions() *UISessions { return &UISessions{db: db} }

var _ web.SessionStore = (*UISessions)(nil)

// CreateSession implements web.SessionStore.
func (s *UISessions) CreateSession(ctx context.Context, ss web.Session) error {
	return s.db.inTx(ctx, func(tx *Tx) error {
		_, err := tx.exec(ctx, `INSERT INTO ui_sessions (id_hash, subject, generation, mfa, created_at, seen_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
			ss.IDHash, ss.Grant.Subject, ss.Grant.Generation, ss.Grant.MFA, ss.CreatedAt.UnixMicro(), ss.SeenAt.UnixMicro(), ss.ExpiresAt.UnixMicro())
		return err
	})
}

// Session implements web.SessionStore. Errors: web.ErrNoSession.
func (s *UISessions) Session(ctx context.Context, idHash string) (web.Session, error) {
	var ss web.Session
	var created, seen, expires int64
	err := s.db.queryRow(ctx, `SELECT id_hash, subject, generation, mfa, created_at, seen_at, expires_at FROM ui_sessions WHERE id_hash = $1`, idHash).
		Scan(&ss.IDHash, &ss.Grant.Subject, &ss.Grant.Generation, &ss.Grant.MFA, &created, &seen, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		return ss, web.ErrNoSession
	} else if err != nil {
		return ss, fmt.Errorf("read a web session: %w", err)
	}
	ss.CreatedAt, ss.SeenAt, ss.ExpiresAt = time.UnixMicro(created).UTC(), time.UnixMicro(seen).UTC(), time.UnixMicro(expires).UTC()
	return ss, nil
}

// TouchSession implements web.SessionStore.
func (s *UISessions) TouchSession(ctx context.Context, idHash string, at time.Time) error {
	return s.db.inTx(ctx, func(tx *Tx) error {
		_, err := tx.exec(ctx, `UPDATE ui_sessions SET seen_at = $1 WHERE id_hash = $2`, at.UnixMicro(), idHash)
		return err
	})
}

// DeleteSession implements web.SessionStore; expired sessions go with it.
func (s *UISessions) DeleteSession(ctx context.Context, idHash string, now time.Time) error {
	return s.db.inTx(ctx, func(tx *Tx) error {
		_, err := tx.exec(ctx, `DELETE FROM ui_sessions WHERE id_hash = $1 OR expires_at < $2`, idHash, now.UnixMicro())
		return err
	})
}
