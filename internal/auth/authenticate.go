package auth

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/secret"
)

// Token is a signed token and when it expires.
type Token struct {
	Token     secret.Value `json:"-"`
	ExpiresAt time.Time    `json:"expires_at"`
}

// Login checks a local user's password (and TOTP code, when the user has enrolled one) and issues a
// token. Every failure is the same ErrUnauthenticated, answered after the same work whether the user
// exists or not, and after a delay that grows with the failures in a row; too many lock the user name
// and the source address (ErrLocked, a *LockedError). Success and failure are audited.
func (s *Service) Login(ctx context.Context, name string, password secret.Value, code, sourceIP string) (Token, error) {
	subjects := []string{"user:" + strings.ToLower(name)}
	if sourceIP != "" {
		subjects = append(subjects, "ip:"+sourceIP)
	}
	target := KindUser + ":" + name
	if err := ValidateName("user", name); err != nil {
		target = "user:?" // never write what was typed into a name field that may have been a password
	}
	now := s.now()
	if wait, err := s.locked(ctx, subjects, now); err != nil {
		return Token{}, err
	} else if wait > 0 {
		_ = s.record(ctx, event("anonymous", ActionLogin, target, audit.Denied, "reason", "locked"))
		return Token{}, &LockedError{RetryAfter: wait}
	}

	u, err := s.store.User(ctx, name)
	found := err == nil
	if err != nil && !errors.Is(err, ErrNotFound) {
		return Token{}, err
	}
	hash := u.PasswordHash
	if !found || hash == "" {
		hash = s.dummy
	}
	ok := VerifyPassword(password, hash) && found && u.PasswordHash != "" && u.DisabledAt.IsZero()
	mfa := false
	if ok && u.MFAEnrolled {
		if mfa, err = s.checkTOTP(ctx, u.Name, code); err != nil {
			return Token{}, err
		}
		ok = mfa
	}
	if !ok {
		failures, err := s.failed(ctx, subjects, now)
		if err != nil {
			return Token{}, err
		}
		if err := s.record(ctx, event("anonymous", ActionLogin, target, audit.Failure)); err != nil {
			return Token{}, err
		}
		s.sleep(ctx, s.delay(failures))
		return Token{}, ErrUnauthenticated
	}
	var tok Token
	err = s.store.Atomically(ctx, func(ctx context.Context) error {
		if err := s.store.ClearLoginFailures(ctx, subjects[0]); err != nil {
			return err
		}
		t, exp, err := s.tokens.Issue(ctx, target, u.Generation, mfa)
		if err != nil {
			return err
		}
		tok = Token{Token: secret.New(t), ExpiresAt: exp}
		return s.record(ctx, event(target, ActionLogin, target, audit.Success, "mfa", fmt.Sprint(mfa)))
	})
	return tok, err
}

// locked returns how long the longest lock on any of subjects lasts from now (0: none).
func (s *Service) locked(ctx context.Context, subjects []string, now time.Time) (time.Duration, error) {
	var wait time.Duration
	for _, sub := range subjects {
		f, err := s.store.LoginFailures(ctx, sub)
		if err != nil {
			return 0, err
		}
		if d := f.LockedUntil.Sub(now); d > wait {
			wait = d
		}
	}
	return wait, nil
}

// failed counts a failure for each subject, locking those over their limit, and returns the user
// name's count of failures in a row.
func (s *Service) failed(ctx context.Context, subjects []string, now time.Time) (int64, error) {
	lo := s.cfg.Lockout
	var userCount int64
	err := s.store.Atomically(ctx, func(ctx context.Context) error {
		for i, sub := range subjects {
			f, err := s.store.LoginFailures(ctx, sub)
			if err != nil {
				return err
			}
			if now.Sub(f.LastAt) > lo.Duration { // old failures are forgotten
				f = Failures{}
			}
			f.Count++
			f.LastAt = now
			limit := lo.MaxFailures
			if i > 0 {
				limit = lo.IPMaxFailures
			}
			if limit > 0 && f.Count >= limit {
				f.LockedUntil = now.Add(lo.Duration)
			}
			if i == 0 {
				userCount = f.Count
			}
			if err := s.store.SetLoginFailures(ctx, sub, f); err != nil {
				return err
			}
		}
		return nil
	})
	return userCount, err
}

// delay is how long the answer to the n-th failure in a row waits.
func (s *Service) delay(n int64) time.Duration {
	d := s.cfg.Lockout.Delay
	for i := int64(1); i < n && d < s.cfg.Lockout.MaxDelay; i++ {
		d *= 2
	}
	return min(d, s.cfg.Lockout.MaxDelay)
}

// TokenForAPIKey issues a token for an API key. The caller has checked the source address (see
// Principal.CIDRs) with AuthenticateAPIKey's principal.
func (s *Service) TokenForAPIKey(ctx context.Context, p *Principal) (Token, error) {
	if p.Kind != KindAPIKey {
		return Token{}, ErrForbidden
	}
	k, err := s.store.APIKey(ctx, p.Name)
	if err != nil {
		return Token{}, err
	}
	var tok Token
	err = s.store.Atomically(ctx, func(ctx context.Context) error {
		t, exp, err := s.tokens.Issue(ctx, p.ID(), k.Generation, false)
		if err != nil {
			return err
		}
		if !k.ExpiresAt.IsZero() && exp.After(k.ExpiresAt) {
			// A token never outlives its key.
			return fmt.Errorf("%w: the API key expires before a token would", ErrUnauthenticated)
		}
		tok = Token{Token: secret.New(t), ExpiresAt: exp}
		return s.record(ctx, event(p.ID(), ActionTokenIssued, p.ID(), audit.Success, "expires_at", exp.Format(time.RFC3339)))
	})
	return tok, err
}

// Logout revokes every token of the principal.
func (s *Service) Logout(ctx context.Context, p *Principal) error {
	return s.changed(ctx, func(ctx context.Context) error {
		switch p.Kind {
		case KindUser:
			u, err := s.store.User(ctx, p.Name)
			if err != nil {
				return err
			}
			u.Generation++
			return s.store.UpdateUser(ctx, u)
		case KindAPIKey:
			k, err := s.store.APIKey(ctx, p.Name)
			if err != nil {
				return err
			}
			k.Generation++
			return s.store.UpdateAPIKey(ctx, k)
		}
		return ErrForbidden
	}, event(p.ID(), ActionLogout, p.ID(), audit.Success))
}

// Authenticate checks a token and returns its principal as it is now: a disabled user, a revoked
// API key, or a generation moved on since the token was issued (logout) all fail.
func (s *Service) Authenticate(ctx context.Context, token string) (*Principal, error) {
	claims, err := s.tokens.Parse(ctx, token)
	if err != nil {
		return nil, err
	}
	kind, name, _ := strings.Cut(claims.Subject, ":")
	var p *Principal
	var gen int64
	switch kind {
	case KindUser:
		u, err := s.store.User(ctx, name)
		if errors.Is(err, ErrNotFound) || (err == nil && !u.DisabledAt.IsZero()) {
			return nil, fmt.Errorf("%w: user gone or disabled", ErrUnauthenticated)
		} else if err != nil {
			return nil, err
		}
		gen = u.Generation
		p = &Principal{Kind: KindUser, Name: u.Name, Role: u.Role, MFAEnrolled: u.MFAEnrolled,
			requireMFA: slices.Contains(s.cfg.RequireMFA, u.Role)}
	case KindAPIKey:
		k, err := s.apiKeyUsable(ctx, name)
		if err != nil {
			return nil, err
		}
		gen = k.Generation
		p = &Principal{Kind: KindAPIKey, Name: k.Name, Role: k.Role, CIDRs: k.CIDRs, requireMFA: slices.Contains(s.cfg.RequireMFA, k.Role)}
	default:
		return nil, fmt.Errorf("%w: token subject of unknown kind", ErrUnauthenticated)
	}
	if claims.Generation != gen {
		return nil, fmt.Errorf("%w: token revoked", ErrUnauthenticated)
	}
	p.MFA, p.Via, p.ExpiresAt = claims.MFA, "token", claims.ExpiresAt.Time
	if p.Teams, err = s.store.TeamsOf(ctx, p.ID()); err != nil {
		return nil, err
	}
	return p, nil
}

// apiKeyUsable returns an API key that is neither revoked nor expired.
func (s *Service) apiKeyUsable(ctx context.Context, name string) (APIKey, error) {
	k, err := s.store.APIKey(ctx, name)
	switch {
	case errors.Is(err, ErrNotFound):
		return k, fmt.Errorf("%w: API key gone", ErrUnauthenticated)
	case err != nil:
		return k, err
	case !k.RevokedAt.IsZero():
		return k, fmt.Errorf("%w: API key revoked", ErrUnauthenticated)
	case !k.ExpiresAt.IsZero() && !s.now().Before(k.ExpiresAt):
		return k, fmt.Errorf("%w: API key expired", ErrUnauthenticated)
	}
	return k, nil
}

// AuthenticateAPIKey checks an API key's value and returns its principal. The caller checks the
// principal's CIDRs against the source address.
func (s *Service) AuthenticateAPIKey(ctx context.Context, value string) (*Principal, error) {
	rest, ok := strings.CutPrefix(value, apiKeyPrefix)
	id, _, ok2 := strings.Cut(rest, "_")
	if !ok || !ok2 || len(id) != 16 {
		return nil, fmt.Errorf("%w: malformed API key", ErrUnauthenticated)
	}
	k, err := s.store.APIKeyByID(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("%w: unknown API key", ErrUnauthenticated)
	} else if err != nil {
		return nil, err
	}
	if subtle.ConstantTimeCompare([]byte(hashAPIKey(value)), []byte(k.Hash)) != 1 {
		return nil, fmt.Errorf("%w: wrong API key", ErrUnauthenticated)
	}
	if k, err = s.apiKeyUsable(ctx, k.Name); err != nil {
		return nil, err
	}
	p := &Principal{Kind: KindAPIKey, Name: k.Name, Role: k.Role, CIDRs: k.CIDRs, Via: "apikey", ExpiresAt: k.ExpiresAt,
		requireMFA: slices.Contains(s.cfg.RequireMFA, k.Role)}
	if p.Teams, err = s.store.TeamsOf(ctx, p.ID()); err != nil {
		return nil, err
	}
	return p, nil
}
