package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/keyward/keyward/internal/auth"
	"github.com/keyward/keyward/internal/vault"
)

// Auth keeps users, teams, API keys and login state over SQL.
type Auth struct{ db *DB }

// Auth returns the auth store on db.
func (db *DB) Auth() *Auth { return &Auth{db: db} }

var _ auth.Store = (*Auth)(nil)

// Atomically implements auth.Store: see DB.Atomically.
func (s *Auth) Atomically(ctx context.Context, fn func(ctx context.Context) error) error {
	return s.db.Atomically(ctx, fn)
}

// exec runs one write in a transaction (the unit of work's, if any), mapping unique violations to
// auth.ErrExists.
func (s *Auth) exec(ctx context.Context, query string, args ...any) (int64, error) {
	var n int64
	err := s.db.inTx(ctx, func(tx *Tx) error {
		res, err := tx.exec(ctx, query, args...)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if kind, _ := constraintViolation(err); kind != noViolation {
		return 0, auth.ErrExists
	}
	return n, err
}

// found turns "no row changed" into auth.ErrNotFound.
func found(n int64, err error) error {
	if err == nil && n == 0 {
		return auth.ErrNotFound
	}
	return err
}

func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

const userColumns = `name, role, password_hash, oidc_subject, mfa_enrolled, disabled_at, token_generation, created_at`

func scanUser(row scanner) (auth.User, error) {
	var u auth.User
	var hash, subject sql.NullString
	var mfa int64
	var disabled sql.NullInt64
	var created int64
	err := row.Scan(&u.Name, &u.Role, &hash, &subject, &mfa, &disabled, &u.Generation, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return u, auth.ErrNotFound
	}
	u.PasswordHash, u.OIDCSubject, u.MFAEnrolled = hash.String, subject.String, mfa != 0
	u.DisabledAt, u.CreatedAt = fromMicros(disabled), time.UnixMicro(created).UTC()
	return u, err
}

// CreateUser implements auth.Store.
func (s *Auth) CreateUser(ctx context.Context, u auth.User) error {
	_, err := s.exec(ctx, `INSERT INTO users (`+userColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
		u.Name, string(u.Role), nullString(u.PasswordHash), nullString(u.OIDCSubject), boolInt(u.MFAEnrolled),
		nullMicros(u.DisabledAt), u.Generation, micros(u.CreatedAt))
	return err
}

// User implements auth.Store.
func (s *Auth) User(ctx context.Context, name string) (auth.User, error) {
	return scanUser(s.db.queryRow(ctx, `SELECT `+userColumns+` FROM users WHERE name = $1`, name))
}

// UserBySubject implements auth.Store.
func (s *Auth) UserBySubject(ctx context.Context, subject string) (auth.User, error) {
	return scanUser(s.db.queryRow(ctx, `SELECT `+userColumns+` FROM users WHERE oidc_subject = $1`, subject))
}

// Users implements auth.Store.
func (s *Auth) Users(ctx context.Context) ([]auth.User, error) {
	rows, err := s.db.query(ctx, `SELECT `+userColumns+` FROM users ORDER BY name`)
	return collect(rows, err, func(rows scanner) (auth.User, error) { return scanUser(rows) })
}

// UpdateUser implements auth.Store.
func (s *Auth) UpdateUser(ctx context.Context, u auth.User) error {
	return found(s.exec(ctx, `UPDATE users SET role = $1, password_hash = $2, oidc_subject = $3, mfa_enrolled = $4,
		disabled_at = $5, token_generation = $6 WHERE name = $7`,
		string(u.Role), nullString(u.PasswordHash), nullString(u.OIDCSubject), boolInt(u.MFAEnrolled),
		nullMicros(u.DisabledAt), u.Generation, u.Name))
}

// DeleteUser implements auth.Store.
func (s *Auth) DeleteUser(ctx context.Context, name string) error {
	return s.db.Atomically(ctx, func(ctx context.Context) error {
		if _, err := s.exec(ctx, `DELETE FROM team_members WHERE principal = $1`, auth.KindUser+":"+name); err != nil {
			return err
		}
		return found(s.exec(ctx, `DELETE FROM users WHERE name = $1`, name))
	})
}

const teamColumns = `name, cloud, account_id, user_name, created_at, session_only`

func scanTeam(row scanner) (auth.Team, error) {
	var t auth.Team
	var created int64
	err := row.Scan(&t.Name, &t.Identity.Cloud, &t.Identity.AccountID, &t.Identity.UserName, &created, &t.SessionOnly)
	if errors.Is(err, sql.ErrNoRows) {
		return t, auth.ErrNotFound
	}
	t.CreatedAt = time.UnixMicro(created).UTC()
	return t, err
}

// CreateTeam implements auth.Store.
func (s *Auth) CreateTeam(ctx context.Context, t auth.Team) error {
	_, err := s.exec(ctx, `INSERT INTO teams (`+teamColumns+`) VALUES ($1, $2, $3, $4, $5, $6)`,
		t.Name, t.Identity.Cloud, t.Identity.AccountID, t.Identity.UserName, micros(t.CreatedAt), t.SessionOnly)
	return err
}

// Team implements auth.Store.
func (s *Auth) Team(ctx context.Context, name string) (auth.Team, error) {
	return scanTeam(s.db.queryRow(ctx, `SELECT `+teamColumns+` FROM teams WHERE name = $1`, name))
}

func (s *Auth) members(ctx context.Context, team string) ([]string, error) {
	rows, err := s.db.query(ctx, `SELECT principal FROM team_members WHERE team = $1 ORDER BY principal`, team)
	members, err := collect(rows, err, scanString)
	if members == nil && err == nil {
		members = []string{}
	}
	return members, err
}

// Teams implements auth.Store.
func (s *Auth) Teams(ctx context.Context) ([]auth.Team, error) {
	rows, err := s.db.query(ctx, `SELECT `+teamColumns+` FROM teams ORDER BY name`)
	teams, err := collect(rows, err, func(rows scanner) (auth.Team, error) { return scanTeam(rows) })
	if err != nil {
		return nil, err
	}
	for i := range teams {
		if teams[i].Members, err = s.members(ctx, teams[i].Name); err != nil {
			return nil, err
		}
	}
	return teams, nil
}

// TeamOf returns the team that owns an identity.
func (s *Auth) TeamOf(ctx context.Context, id vault.Identity) (auth.Team, error) {
	return scanTeam(s.db.queryRow(ctx, `SELECT `+teamColumns+` FROM teams WHERE cloud = $1 AND account_id = $2 AND user_name = $3`,
		id.Cloud, id.AccountID, id.UserName))
}

// DeleteTeam implements auth.Store.
func (s *Auth) DeleteTeam(ctx context.Context, name string) error {
	return s.db.Atomically(ctx, func(ctx context.Context) error {
		if _, err := s.exec(ctx, `DELETE FROM team_members WHERE team = $1`, name); err != nil {
			return err
		}
		return found(s.exec(ctx, `DELETE FROM teams WHERE name = $1`, name))
	})
}

// AddMember implements auth.Store.
func (s *Auth) AddMember(ctx context.Context, team, principal string) error {
	_, err := s.exec(ctx, `INSERT INTO team_members (team, principal) VALUES ($1, $2) ON CONFLICT DO NOTHING`, team, principal)
	return err
}

// RemoveMember implements auth.Store.
func (s *Auth) RemoveMember(ctx context.Context, team, principal string) error {
	return found(s.exec(ctx, `DELETE FROM team_members WHERE team = $1 AND principal = $2`, team, principal))
}

// TeamsOf implements auth.Store.
func (s *Auth) TeamsOf(ctx context.Context, principal string) ([]string, error) {
	rows, err := s.db.query(ctx, `SELECT team FROM team_members WHERE principal = $1 ORDER BY team`, principal)
	teams, err := collect(rows, err, scanString)
	if teams == nil && err == nil {
		teams = []string{}
	}
	return teams, err
}

const apiKeyColumns = `name, key_id, hash, role, cidrs, expires_at, revoked_at, token_generation, created_at`

func scanAPIKey(row scanner) (auth.APIKey, error) {
	var k auth.APIKey
	var cidrs string
	var expires, revoked sql.NullInt64
	var created int64
	err := row.Scan(&k.Name, &k.KeyID, &k.Hash, &k.Role, &cidrs, &expires, &revoked, &k.Generation, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return k, auth.ErrNotFound
	}
	if err != nil {
		return k, err
	}
	k.ExpiresAt, k.RevokedAt, k.CreatedAt = fromMicros(expires), fromMicros(revoked), time.UnixMicro(created).UTC()
	k.CIDRs = []netip.Prefix{}
	for _, c := range strings.Fields(cidrs) {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			return k, fmt.Errorf("API key %s: stored CIDR %q: %w", k.Name, c, err)
		}
		k.CIDRs = append(k.CIDRs, p)
	}
	return k, nil
}

// CreateAPIKey implements auth.Store.
func (s *Auth) CreateAPIKey(ctx context.Context, k auth.APIKey) error {
	cidrs := make([]string, len(k.CIDRs))
	for i, c := range k.CIDRs {
		cidrs[i] = c.String()
	}
	_, err := s.exec(ctx, `INSERT INTO api_keys (`+apiKeyColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
		k.Name, k.KeyID, k.Hash, string(k.Role), strings.Join(cidrs, " "), nullMicros(k.ExpiresAt), nullMicros(k.RevokedAt),
		k.Generation, micros(k.CreatedAt))
	return err
}

// APIKey implements auth.Store.
func (s *Auth) APIKey(ctx context.Context, name string) (auth.APIKey, error) {
	return scanAPIKey(s.db.queryRow(ctx, `SELECT `+apiKeyColumns+` FROM api_keys WHERE name = $1`, name))
}

// APIKeyByID implements auth.Store.
func (s *Auth) APIKeyByID(ctx context.Context, keyID string) (auth.APIKey, error) {
	return scanAPIKey(s.db.queryRow(ctx, `SELECT `+apiKeyColumns+` FROM api_keys WHERE key_id = $1`, keyID))
}

// APIKeys implements auth.Store.
func (s *Auth) APIKeys(ctx context.Context) ([]auth.APIKey, error) {
	rows, err := s.db.query(ctx, `SELECT `+apiKeyColumns+` FROM api_keys ORDER BY name`)
	return collect(rows, err, func(rows scanner) (auth.APIKey, error) { return scanAPIKey(rows) })
}

// UpdateAPIKey implements auth.Store.
func (s *Auth) UpdateAPIKey(ctx context.Context, k auth.APIKey) error {
	return found(s.exec(ctx, `UPDATE api_keys SET revoked_at = $1, token_generation = $2 WHERE name = $3`,
		nullMicros(k.RevokedAt), k.Generation, k.Name))
}

// LoginFailures implements auth.Store.
func (s *Auth) LoginFailures(ctx context.Context, subject string) (auth.Failures, error) {
	var f auth.Failures
	var last int64
	var locked sql.NullInt64
	err := s.db.queryRow(ctx, `SELECT failures, last_at, locked_until FROM login_failures WHERE subject = $1`, subject).
		Scan(&f.Count, &last, &locked)
	if errors.Is(err, sql.ErrNoRows) {
		return auth.Failures{}, nil
	}
	f.LastAt, f.LockedUntil = time.UnixMicro(last).UTC(), fromMicros(locked)
	return f, err
}

// ReserveLoginAttempt implements auth.Store: one statement, so that however many logins race (on
// any replica) each takes its own place in the count before its password is checked. The count
// starts again once window has passed since the last attempt or a lock ran out; the attempt that
// reaches limit (0: none) locks the subject until now + window. A subject locked now is left as it
// is and reported with the lock's end.
func (s *Auth) ReserveLoginAttempt(ctx context.Context, subject string, limit int64, now time.Time, window time.Duration) (int64, time.Time, error) {
	var count int64
	var lockedUntil time.Time
	err := s.db.inTx(ctx, func(tx *Tx) error {
		const fresh = `CASE WHEN login_failures.last_at <= CAST($5 AS BIGINT) OR login_failures.locked_until IS NOT NULL
			THEN 1 ELSE login_failures.failures + 1 END`
		err := tx.queryRow(ctx, `INSERT INTO login_failures (subject, failures, last_at, locked_until)
			VALUES ($1, 1, CAST($2 AS BIGINT), CASE WHEN CAST($3 AS BIGINT) = 1 THEN CAST($4 AS BIGINT) END)
			ON CONFLICT (subject) DO UPDATE SET failures = `+fresh+`, last_at = CAST($2 AS BIGINT),
				locked_until = CASE WHEN CAST($3 AS BIGINT) > 0 AND `+fresh+` >= CAST($3 AS BIGINT) THEN CAST($4 AS BIGINT) END
			WHERE login_failures.locked_until IS NULL OR login_failures.locked_until <= CAST($2 AS BIGINT)
			RETURNING failures`, subject, micros(now), limit, micros(now.Add(window)), micros(now.Add(-window))).Scan(&count)
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		var locked sql.NullInt64
		if err := tx.queryRow(ctx, `SELECT locked_until FROM login_failures WHERE subject = $1`, subject).Scan(&locked); err != nil {
			return err
		}
		lockedUntil = fromMicros(locked)
		return nil
	})
	return count, lockedUntil, err
}

// ReleaseLoginAttempt implements auth.Store: an attempt that succeeded gives its place back, and a
// lock it set is lifted once the count is under limit again.
func (s *Auth) ReleaseLoginAttempt(ctx context.Context, subject string, limit int64) error {
	_, err := s.exec(ctx, `UPDATE login_failures SET failures = failures - 1,
		locked_until = CASE WHEN failures - 1 < CAST($2 AS BIGINT) THEN NULL ELSE locked_until END
		WHERE subject = $1 AND failures > 0`, subject, limit)
	return err
}

// ClearLoginFailures implements auth.Store.
func (s *Auth) ClearLoginFailures(ctx context.Context, subject string) error {
	_, err := s.exec(ctx, `DELETE FROM login_failures WHERE subject = $1`, subject)
	return err
}

// UseTOTPStep implements auth.Store: one conditional update, so that of two logins racing with the
// same code (on any replica) only one wins.
func (s *Auth) UseTOTPStep(ctx context.Context, user string, step int64) (bool, error) {
	n, err := s.exec(ctx, `UPDATE users SET totp_last_step = $1
		WHERE name = $2 AND (totp_last_step IS NULL OR totp_last_step < $1)`, step, user)
	return n == 1, err
}

// PutOIDCLogin implements auth.Store.
func (s *Auth) PutOIDCLogin(ctx context.Context, l auth.OIDCLogin) error {
	return s.db.Atomically(ctx, func(ctx context.Context) error {
		// Sign-ins never finished are swept as new ones start.
		if _, err := s.exec(ctx, `DELETE FROM oidc_logins WHERE expires_at < $1`, micros(time.Now())); err != nil {
			return err
		}
		_, err := s.exec(ctx, `INSERT INTO oidc_logins (state, nonce, verifier, expires_at) VALUES ($1, $2, $3, $4)`,
			l.State, l.Nonce, l.Verifier, micros(l.ExpiresAt))
		return err
	})
}

// TakeOIDCLogin implements auth.Store.
func (s *Auth) TakeOIDCLogin(ctx context.Context, state string) (auth.OIDCLogin, error) {
	var l auth.OIDCLogin
	err := s.db.Atomically(ctx, func(ctx context.Context) error {
		var exp int64
		err := s.db.queryRow(ctx, `SELECT state, nonce, verifier, expires_at FROM oidc_logins WHERE state = $1`, state).
			Scan(&l.State, &l.Nonce, &l.Verifier, &exp)
		if errors.Is(err, sql.ErrNoRows) {
			return auth.ErrNotFound
		} else if err != nil {
			return err
		}
		l.ExpiresAt = time.UnixMicro(exp).UTC()
		return found(s.exec(ctx, `DELETE FROM oidc_logins WHERE state = $1`, state))
	})
	return l, err
}
