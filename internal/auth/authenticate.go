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
	"github.com/keyward/keyward/internal/backoff"
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
//
// An attempt takes its place in the count of its name and its address before its password is
// checked (Store.ReserveLoginAttempt), so that however many race, on however many replicas, no more
// than the limits' worth of guesses are ever checked. Before that, it waits for a place among the
// hashes computed at once (ErrBusy when none comes soon): Argon2id's memory is bounded.
func (s *Service) Login(ctx context.Context, name string, password secret.Value, code, sourceIP string) (Token, error) {
	target := KindUser + ":" + name
	if err := ValidateName("user", name); err != nil {
		target = "user:?" // never write what was typed into a name field that may have been a password
	}
	release, err := s.hashSlot(ctx)
	if err != nil {
		return Token{}, err
	}
	defer release()
	now := s.now()
	userCount, err := s.reserve(ctx, name, sourceIP, now)
	var locked *LockedError
	if errors.As(err, &locked) {
		_ = s.record(ctx, event("anonymous", ActionLogin, target, audit.Denied, "reason", "locked"))
		return Token{}, err
	} else if err != nil {
		return Token{}, err
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
	release()
	mfa := false
	if ok && u.MFAEnrolled {
		if mfa, err = s.checkTOTP(ctx, u.Name, code); err != nil {
			return Token{}, err
		}
		ok = mfa
	}
	if !ok {
		// The attempt's reserved place is its failure.
		if err := s.record(ctx, event("anonymous", ActionLogin, target, audit.Failure)); err != nil {
			return Token{}, err
		}
		s.sleep(ctx, s.delay(userCount))
		return Token{}, ErrUnauthenticated
	}
	t, exp, err := s.tokens.Issue(ctx, target, u.Generation, mfa)
	if err != nil {
		return Token{}, err
	}
	err = s.store.Atomically(ctx, func(ctx context.Context) error {
		if err := s.store.ClearLoginFailures(ctx, userSubject(name)); err != nil {
			return err
		}
		if sourceIP != "" {
			if err := s.store.ReleaseLoginAttempt(ctx, "ip:"+sourceIP, s.cfg.Lockout.IPMaxFailures); err != nil {
				return err
			}
		}
		return s.record(ctx, event(target, ActionLogin, target, audit.Success, "mfa", fmt.Sprint(mfa)))
	})
	if err != nil {
		return Token{}, err
	}
	return Token{Token: secret.New(t), ExpiresAt: exp}, nil
}

func userSubject(name string) string { return "user:" + strings.ToLower(name) }

// reserve takes an attempt's place in the count of its address, then of its user name, and returns
// the name's count; a *LockedError when either is locked (an address locked counts nothing more).
func (s *Service) reserve(ctx context.Context, name, sourceIP string, now time.Time) (int64, error) {
	lo := s.cfg.Lockout
	if sourceIP != "" {
		if n, until, err := s.store.ReserveLoginAttempt(ctx, "ip:"+sourceIP, lo.IPMaxFailures, now, lo.Duration); err != nil {
			return 0, err
		} else if n == 0 {
			return 0, &LockedError{RetryAfter: until.Sub(now)}
		}
	}
	n, until, err := s.store.ReserveLoginAttempt(ctx, userSubject(name), lo.MaxFailures, now, lo.Duration)
	if err != nil {
		return 0, err
	} else if n == 0 {
		return 0, &LockedError{RetryAfter: until.Sub(now)}
	}
	return n, nil
}

// AddressLocked says how long logins from an address stay locked (0: they are not), so that the API
// can refuse one before it reads the request's body.
func (s *Service) AddressLocked(ctx context.Context, sourceIP string) (time.Duration, error) {
	f, err := s.store.LoginFailures(ctx, "ip:"+sourceIP)
	if err != nil {
		return 0, err
	}
	return max(f.LockedUntil.Sub(s.now()), 0), nil
}

// delay is how long the answer to the n-th failure in a row waits.
func (s *Service) delay(n int64) time.Duration {
	return backoff.Exponential(s.cfg.Lockout.Delay, s.cfg.Lockout.MaxDelay, int(min(n, 64)))
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
	// Signed before it is recorded, outside the transaction: signing may call the KEK.
	t, exp, err := s.tokens.Issue(ctx, p.ID(), k.Generation, false)
	if err != nil {
		return Token{}, err
	}
	if !k.ExpiresAt.IsZero() && exp.After(k.ExpiresAt) {
		// A token never outlives its key.
		return Token{}, fmt.Errorf("%w: the API key expires before a token would", ErrUnauthenticated)
	}
	if err := s.record(ctx, event(p.ID(), ActionTokenIssued, p.ID(), audit.Success, "expires_at", exp.Format(time.RFC3339))); err != nil {
		return Token{}, err
	}
	return Token{Token: secret.New(t), ExpiresAt: exp}, nil
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
	p, err := s.Principal(ctx, Grant{Subject: claims.Subject, Generation: claims.Generation, MFA: claims.MFA})
	if err != nil {
		return nil, err
	}
	p.Via, p.ExpiresAt = "token", claims.ExpiresAt.Time
	return p, nil
}

// Grant is what a login granted: the principal, its generation then, and whether a second factor
// was given. A token carries one; so does a web session.
type Grant struct {
	Subject    string // user:NAME or apikey:NAME
	Generation int64
	MFA        bool
}

// GrantOf reads what a token of this service grants (its signature and expiry checked).
func (s *Service) GrantOf(ctx context.Context, token secret.Value) (Grant, error) {
	claims, err := s.tokens.Parse(ctx, token.Reveal())
	if err != nil {
		return Grant{}, err
	}
	return Grant{Subject: claims.Subject, Generation: claims.Generation, MFA: claims.MFA}, nil
}

// Principal returns a grant's principal as it is now: a disabled user, a revoked API key, or a
// generation moved on since the grant (logout) all fail with ErrUnauthenticated.
func (s *Service) Principal(ctx context.Context, g Grant) (*Principal, error) {
	var err error
	kind, name, _ := strings.Cut(g.Subject, ":")
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
			requireMFA: slices.Contains(s.cfg.RequireMFA, u.Role), sso: u.OIDCSubject != ""}
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
	if g.Generation != gen {
		return nil, fmt.Errorf("%w: token revoked", ErrUnauthenticated)
	}
	p.MFA = g.MFA
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
