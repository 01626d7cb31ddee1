package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"

	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/duration"
	"github.com/keyward/keyward/internal/secret"
	"github.com/keyward/keyward/internal/vault"
)

// Recorder keeps the audit trail (audit.Trail): events join the unit of work ctx carries.
type Recorder interface {
	Record(ctx context.Context, events ...audit.Event) error
}

// Audit actions of this package. Targets are principals ("user:alice") or teams ("team:payments").
const (
	ActionLogin         = "auth.login"
	ActionLogout        = "auth.logout"
	ActionTokenIssued   = "auth.token"
	ActionUserCreated   = "user.created"
	ActionUserDisabled  = "user.disabled"
	ActionUserDeleted   = "user.deleted"
	ActionMFAEnrolled   = "user.mfa_enrolled"
	ActionTeamCreated   = "team.created"
	ActionTeamDeleted   = "team.deleted"
	ActionMemberAdded   = "team.member_added"
	ActionAPIKeyCreated = "apikey.created"
	ActionAPIKeyRevoked = "apikey.revoked"
)

// Lockout slows down and then stops password guessing.
type Lockout struct {
	// MaxFailures failed logins of one user name in a row lock it for Duration (0: never).
	MaxFailures int64
	// IPMaxFailures failed logins from one address lock that address for Duration (0: never).
	IPMaxFailures int64
	// Duration of a lock; failures older than this are forgotten.
	Duration time.Duration
	// Delay is how long the answer to a failed login waits, doubled per failure in a row, up to MaxDelay.
	Delay    time.Duration
	MaxDelay time.Duration
}

// Config is the service's configuration.
type Config struct {
	Argon2      Argon2Params
	RequireMFA  []Role // roles that must give a second factor before reading a secret
	Issuer      string
	Audience    string
	TokenTTL    time.Duration
	KeyRotation time.Duration
	Lockout     Lockout
	// AccountManaged, when set, says whether Keyward manages a cloud account: a team may own an
	// identity in such an account only.
	AccountManaged func(ctx context.Context, accountID string) (bool, error)
	// MaxConcurrentHashes bounds the password hashes computed at once, each of Argon2.MemoryKiB
	// (0: as many as fit in DefaultHashMemoryBudget).
	MaxConcurrentHashes int
}

// DefaultHashMemoryBudget is the memory the password hashes computed at once may take, when the
// configuration does not bound their number.
const DefaultHashMemoryBudget = 256 << 20

// HashSlots is how many password hashes of p may be computed at once: limit, or as many as fit in
// DefaultHashMemoryBudget, and at least one.
func HashSlots(limit int, p Argon2Params) int {
	if limit > 0 {
		return limit
	}
	return int(max(1, DefaultHashMemoryBudget/(int64(p.MemoryKiB)<<10)))
}

// Service manages principals and authenticates them.
type Service struct {
	cfg    Config
	store  Store
	vault  *vault.Vault
	tokens *Tokens
	audit  Recorder
	now    func() time.Time
	sleep  func(ctx context.Context, d time.Duration)
	// dummy is a hash checked when a login names nobody, so that it takes as long as a wrong password.
	dummy string
	// hashes holds a token per password hash being computed (see hashSlot).
	hashes chan struct{}
}

// hashWait is how long a login waits for a place among the hashes computed at once before it is
// turned away (ErrBusy).
const hashWait = 500 * time.Millisecond

// hashSlot waits briefly for a place among the password hashes computed at once, so that Argon2's
// memory stays bounded whatever the number of logins; it returns a *BusyError when none comes. The
// release it returns may be called more than once.
func (s *Service) hashSlot(ctx context.Context) (func(), error) {
	t := time.NewTimer(hashWait)
	defer t.Stop()
	select {
	case s.hashes <- struct{}{}:
	case <-t.C:
		return nil, &BusyError{RetryAfter: time.Second}
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	var once sync.Once
	return func() { once.Do(func() { <-s.hashes }) }, nil
}

// New returns the service. audit may be nil (records nothing); now may be nil.
func New(cfg Config, st Store, v *vault.Vault, rec Recorder, now func() time.Time) (*Service, error) {
	if now == nil {
		now = time.Now
	}
	dummy, err := HashPassword(secret.New("no user has this password, it only takes time"), cfg.Argon2)
	if err != nil {
		return nil, err
	}
	return &Service{cfg: cfg, store: st, vault: v, audit: rec, now: now, dummy: dummy,
		hashes: make(chan struct{}, HashSlots(cfg.MaxConcurrentHashes, cfg.Argon2)),
		tokens: NewTokens(v, cfg.Issuer, cfg.Audience, cfg.TokenTTL, cfg.KeyRotation, now),
		sleep: func(ctx context.Context, d time.Duration) {
			t := time.NewTimer(d)
			defer t.Stop()
			select {
			case <-ctx.Done():
			case <-t.C:
			}
		}}, nil
}

// Tokens returns the token service (JWKS, key rotation).
func (s *Service) Tokens() *Tokens { return s.tokens }

// Store returns the service's store.
func (s *Service) Store() Store { return s.store }

// record appends audit events, if there is a trail.
func (s *Service) record(ctx context.Context, events ...audit.Event) error {
	if s.audit == nil {
		return nil
	}
	return s.audit.Record(ctx, events...)
}

func event(actor, action, target, outcome string, detail ...string) audit.Event {
	d := map[string]string{}
	for i := 0; i+1 < len(detail); i += 2 {
		if detail[i+1] != "" {
			d[detail[i]] = detail[i+1]
		}
	}
	return audit.Event{Actor: actor, Action: action, Target: target, Outcome: outcome, Detail: d}
}

// changed makes an admin change and records it in one transaction.
func (s *Service) changed(ctx context.Context, change func(ctx context.Context) error, events ...audit.Event) error {
	return s.store.Atomically(ctx, func(ctx context.Context) error {
		if err := change(ctx); err != nil {
			return err
		}
		return s.record(ctx, events...)
	})
}

// checkTeams checks that every team exists.
func (s *Service) checkTeams(ctx context.Context, teams []string) error {
	for _, t := range teams {
		if err := ValidateName("team", t); err != nil {
			return err
		}
		if _, err := s.store.Team(ctx, t); errors.Is(err, ErrNotFound) {
			return fmt.Errorf("team %q: %w", t, ErrNotFound)
		} else if err != nil {
			return err
		}
	}
	return nil
}

// AddUser creates a local user with a password (none for a user who signs in through OIDC only).
func (s *Service) AddUser(ctx context.Context, actor, name string, role Role, teams []string, password secret.Value) (User, error) {
	if err := ValidateName("user", name); err != nil {
		return User{}, err
	}
	if _, err := ParseRole(string(role)); err != nil {
		return User{}, err
	}
	u := User{Name: name, Role: role, CreatedAt: s.now().UTC(), Teams: slices.Compact(slices.Sorted(slices.Values(teams)))}
	if !password.IsZero() {
		if err := CheckPassword(password); err != nil {
			return User{}, err
		}
		release, err := s.hashSlot(ctx)
		if err != nil {
			return User{}, err
		}
		h, err := HashPassword(password, s.cfg.Argon2)
		release()
		if err != nil {
			return User{}, err
		}
		u.PasswordHash = h
	}
	err := s.changed(ctx, func(ctx context.Context) error {
		if err := s.checkTeams(ctx, u.Teams); err != nil {
			return err
		}
		if err := s.store.CreateUser(ctx, u); err != nil {
			return fmt.Errorf("user %q: %w", name, err)
		}
		for _, t := range u.Teams {
			if err := s.store.AddMember(ctx, t, KindUser+":"+name); err != nil {
				return err
			}
		}
		return nil
	}, event(actor, ActionUserCreated, KindUser+":"+name, audit.Success, "role", string(role), "teams", strings.Join(u.Teams, ",")))
	return u, err
}

// User returns a user with its teams.
func (s *Service) User(ctx context.Context, name string) (User, error) {
	u, err := s.store.User(ctx, name)
	if err != nil {
		return u, fmt.Errorf("user %q: %w", name, err)
	}
	u.Teams, err = s.store.TeamsOf(ctx, KindUser+":"+name)
	return u, err
}

// Users lists the users with their teams.
func (s *Service) Users(ctx context.Context) ([]User, error) {
	us, err := s.store.Users(ctx)
	if err != nil {
		return nil, err
	}
	for i := range us {
		if us[i].Teams, err = s.store.TeamsOf(ctx, KindUser+":"+us[i].Name); err != nil {
			return nil, err
		}
	}
	return us, nil
}

// notLastAdmin refuses to take away the last enabled admin (ErrLastAdmin): nobody could then
// administer Keyward but through the database.
func (s *Service) notLastAdmin(ctx context.Context, u User) error {
	if u.Role != RoleAdmin || !u.DisabledAt.IsZero() {
		return nil
	}
	users, err := s.store.Users(ctx)
	if err != nil {
		return err
	}
	for _, o := range users {
		if o.Name != u.Name && o.Role == RoleAdmin && o.DisabledAt.IsZero() {
			return nil
		}
	}
	return fmt.Errorf("user %q: %w", u.Name, ErrLastAdmin)
}

// DisableUser disables a user and revokes its tokens; the last enabled admin is refused (ErrLastAdmin).
func (s *Service) DisableUser(ctx context.Context, actor, name string) error {
	return s.changed(ctx, func(ctx context.Context) error {
		u, err := s.store.User(ctx, name)
		if err != nil {
			return fmt.Errorf("user %q: %w", name, err)
		}
		if err := s.notLastAdmin(ctx, u); err != nil {
			return err
		}
		if u.DisabledAt.IsZero() {
			u.DisabledAt = s.now().UTC()
		}
		u.Generation++
		return s.store.UpdateUser(ctx, u)
	}, event(actor, ActionUserDisabled, KindUser+":"+name, audit.Success))
}

// DeleteUser deletes a user, its memberships and its TOTP seed; its tokens stop working. The last
// enabled admin is refused (ErrLastAdmin).
func (s *Service) DeleteUser(ctx context.Context, actor, name string) error {
	return s.changed(ctx, func(ctx context.Context) error {
		u, err := s.store.User(ctx, name)
		if err != nil {
			return fmt.Errorf("user %q: %w", name, err)
		}
		if err := s.notLastAdmin(ctx, u); err != nil {
			return err
		}
		if err := s.store.DeleteUser(ctx, name); err != nil {
			return fmt.Errorf("user %q: %w", name, err)
		}
		return s.vault.DeleteBlob(ctx, totpBlob(name))
	}, event(actor, ActionUserDeleted, KindUser+":"+name, audit.Success))
}

func totpBlob(user string) string { return "totp:" + user }

// EnrollMFA gives a local user a new TOTP seed (RFC 6238: SHA-1, 6 digits, 30 s, as authenticator
// apps expect) and returns it as an otpauth:// URI for the user's app. The seed is sealed in the
// vault; the URI holds it, so it is shown to the user once and never logged.
func (s *Service) EnrollMFA(ctx context.Context, actor, name string) (secret.Value, error) {
	key, err := totp.Generate(totp.GenerateOpts{Issuer: "Keyward", AccountName: name, SecretSize: 20,
		Period: totpOpts.Period, Digits: totpOpts.Digits, Algorithm: totpOpts.Algorithm})
	if err != nil {
		return secret.Value{}, err
	}
	// Sealed before the transaction: the KEK may be AWS KMS.
	sealed, err := s.vault.SealedBlob(ctx, totpBlob(name), []byte(key.Secret()))
	if err != nil {
		return secret.Value{}, err
	}
	err = s.changed(ctx, func(ctx context.Context) error {
		u, err := s.store.User(ctx, name)
		if err != nil {
			return fmt.Errorf("user %q: %w", name, err)
		}
		if u.PasswordHash == "" {
			return invalid("user %q signs in through OIDC: its identity provider asks for the second factor", name)
		}
		if err := s.vault.PutBlob(ctx, totpBlob(name), sealed); err != nil {
			return err
		}
		u.MFAEnrolled = true
		u.Generation++ // tokens issued without the new factor's knowledge end now
		return s.store.UpdateUser(ctx, u)
	}, event(actor, ActionMFAEnrolled, KindUser+":"+name, audit.Success))
	if err != nil {
		return secret.Value{}, err
	}
	return secret.New(key.URL()), nil
}

// TOTPCode is the code a user's authenticator shows at a time: for the demo (keyward demo totp) and
// tests, on the database host; it reads the seed sealed in the vault.
func (s *Service) TOTPCode(ctx context.Context, name string, at time.Time) (string, error) {
	seed, err := s.vault.OpenBlob(ctx, totpBlob(name))
	switch {
	case errors.Is(err, vault.ErrNotFound):
		// The vault's name for the seed is nobody's business: say what the user can act on.
		if _, uerr := s.store.User(ctx, name); uerr != nil {
			return "", fmt.Errorf("user %q: %w", name, ErrNotFound)
		}
		return "", invalid("user %q has no authenticator enrolled (keyward user mfa enroll %s)", name, name)
	case err != nil:
		return "", fmt.Errorf("the authenticator seed of %s: %w", name, err)
	}
	defer clear(seed)
	return totp.GenerateCodeCustom(string(seed), at, totpOpts)
}

// checkTOTP checks a code against a user's seed, allowing one 30-second step either way.
func (s *Service) checkTOTP(ctx context.Context, name, code string) (bool, error) {
	seed, err := s.vault.OpenBlob(ctx, totpBlob(name))
	if err != nil {
		return false, err
	}
	defer clear(seed)
	// The code of the current 30-second step or of either neighbour (clock drift), each accepted once:
	// a code already used, or older than the last one used, is refused (RFC 6238 §5.2).
	step := s.now().Unix() / totpPeriod
	for _, d := range []int64{-1, 0, 1} {
		want, err := totp.GenerateCodeCustom(string(seed), time.Unix((step+d)*totpPeriod, 0), totpOpts)
		if err != nil {
			return false, nil
		}
		if subtle.ConstantTimeCompare([]byte(code), []byte(want)) == 1 {
			return s.store.UseTOTPStep(ctx, name, step+d)
		}
	}
	return false, nil
}

// totpPeriod and totpOpts are the TOTP parameters every authenticator app assumes (RFC 6238's), for
// enrolment and for checking codes alike.
const totpPeriod = 30

var totpOpts = totp.ValidateOpts{Period: totpPeriod, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1}

// AddTeam creates a team owning a cloud identity.
func (s *Service) AddTeam(ctx context.Context, actor string, t Team) (Team, error) {
	if err := ValidateName("team", t.Name); err != nil {
		return Team{}, err
	}
	if err := t.Identity.Validate(); err != nil {
		return Team{}, invalid("team %q: %v", t.Name, err)
	}
	if s.cfg.AccountManaged != nil { // asked before the transaction: it may call the cloud
		ok, err := s.cfg.AccountManaged(ctx, t.Identity.AccountID)
		if err != nil {
			return Team{}, fmt.Errorf("team %q: cannot tell whether Keyward manages account %s: %w", t.Name, t.Identity.AccountID, err)
		}
		if !ok {
			// Like a team that does not exist for a new user: what the request names is not there (404).
			return Team{}, fmt.Errorf("team %q: account %s is not one Keyward manages (aws.accounts, or the organization's accounts): %w",
				t.Name, t.Identity.AccountID, ErrNotFound)
		}
	}
	t.CreatedAt, t.Members = s.now().UTC(), []string{}
	err := s.changed(ctx, func(ctx context.Context) error {
		if err := s.store.CreateTeam(ctx, t); err != nil {
			return fmt.Errorf("team %q (%s): %w", t.Name, t.Identity, err)
		}
		return nil
	}, event(actor, ActionTeamCreated, "team:"+t.Name, audit.Success, "identity", t.Identity.String(), "session_only", fmt.Sprint(t.SessionOnly)))
	return t, err
}

// DeleteTeam deletes a team and its memberships; its cloud identity and keys are left as they are.
func (s *Service) DeleteTeam(ctx context.Context, actor, name string) error {
	return s.changed(ctx, func(ctx context.Context) error {
		if err := s.store.DeleteTeam(ctx, name); err != nil {
			return fmt.Errorf("team %q: %w", name, err)
		}
		return nil
	}, event(actor, ActionTeamDeleted, "team:"+name, audit.Success))
}

// AddMember adds a user or API key (principal id "user:alice", or a bare user name) to a team.
func (s *Service) AddMember(ctx context.Context, actor, team, principal string) error {
	if !strings.Contains(principal, ":") {
		principal = KindUser + ":" + principal
	}
	kind, name, _ := strings.Cut(principal, ":")
	return s.changed(ctx, func(ctx context.Context) error {
		if _, err := s.store.Team(ctx, team); err != nil {
			return fmt.Errorf("team %q: %w", team, err)
		}
		var err error
		switch kind {
		case KindUser:
			_, err = s.store.User(ctx, name)
		case KindAPIKey:
			_, err = s.store.APIKey(ctx, name)
		default:
			err = invalid("want user:NAME or apikey:NAME")
		}
		if err != nil {
			return fmt.Errorf("member %q: %w", principal, err)
		}
		return s.store.AddMember(ctx, team, principal)
	}, event(actor, ActionMemberAdded, "team:"+team, audit.Success, "member", principal))
}

// Team returns a team (without its members: see Teams).
func (s *Service) Team(ctx context.Context, name string) (Team, error) {
	t, err := s.store.Team(ctx, name)
	if err != nil {
		return t, fmt.Errorf("team %q: %w", name, err)
	}
	return t, nil
}

// Teams lists the teams with their members.
func (s *Service) Teams(ctx context.Context) ([]Team, error) { return s.store.Teams(ctx) }

// API keys are "kw_" + a 16-hex-digit id + "_" + 43 characters of base64url (256 random bits). The
// id finds the key; only the SHA-256 of the whole key is stored (a random 256-bit key needs no slow
// hash).
const apiKeyPrefix = "kw_"

func hashAPIKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

// ParseCIDR reads a network an API key may be used from, such as 10.0.0.0/8, masked to its prefix.
// The CLI, the API and the web pages read their input with it.
func ParseCIDR(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, invalid("%q is not a CIDR such as 10.0.0.0/8", s)
	}
	return p.Masked(), nil
}

// ParseKeyLifetime reads how long an API key lasts: a positive duration in the configuration's
// syntax (90d, 36h, 1d12h); "" is no end.
func ParseKeyLifetime(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	ttl, err := duration.Parse(s)
	if err != nil || ttl <= 0 {
		return 0, invalid("%q: want a positive duration such as 90d or 12h", s)
	}
	return ttl, nil
}

// CreateAPIKey makes an API key and returns it with its value, which is shown once and never stored.
func (s *Service) CreateAPIKey(ctx context.Context, actor, name string, role Role, teams []string, cidrs []netip.Prefix, ttl time.Duration) (APIKey, secret.Value, error) {
	if err := ValidateName("API key", name); err != nil {
		return APIKey{}, secret.Value{}, err
	}
	if _, err := ParseRole(string(role)); err != nil {
		return APIKey{}, secret.Value{}, err
	}
	if ttl < 0 {
		return APIKey{}, secret.Value{}, invalid("expires: must not be negative")
	}
	id, raw := make([]byte, 8), make([]byte, 32)
	_, _ = rand.Read(id)
	_, _ = rand.Read(raw)
	k := APIKey{Name: name, KeyID: hex.EncodeToString(id), Role: role, CIDRs: cidrs, CreatedAt: s.now().UTC(),
		Teams: slices.Compact(slices.Sorted(slices.Values(teams)))}
	value := apiKeyPrefix + k.KeyID + "_" + base64.RawURLEncoding.EncodeToString(raw)
	k.Hash = hashAPIKey(value)
	if ttl > 0 {
		k.ExpiresAt = k.CreatedAt.Add(ttl)
	}
	cidrText := make([]string, len(cidrs))
	for i, c := range cidrs {
		cidrText[i] = c.String()
	}
	err := s.changed(ctx, func(ctx context.Context) error {
		if err := s.checkTeams(ctx, k.Teams); err != nil {
			return err
		}
		if err := s.store.CreateAPIKey(ctx, k); err != nil {
			return fmt.Errorf("API key %q: %w", name, err)
		}
		for _, t := range k.Teams {
			if err := s.store.AddMember(ctx, t, KindAPIKey+":"+name); err != nil {
				return err
			}
		}
		return nil
	}, event(actor, ActionAPIKeyCreated, KindAPIKey+":"+name, audit.Success, "role", string(role), "key_id", k.KeyID,
		"teams", strings.Join(k.Teams, ","), "cidrs", strings.Join(cidrText, ","), "expires_at", formatTime(k.ExpiresAt)))
	if err != nil {
		return APIKey{}, secret.Value{}, err
	}
	return k, secret.New(value), nil
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.Format(time.RFC3339)
}

// RevokeAPIKey revokes an API key and the tokens issued for it.
func (s *Service) RevokeAPIKey(ctx context.Context, actor, name string) error {
	return s.changed(ctx, func(ctx context.Context) error {
		k, err := s.store.APIKey(ctx, name)
		if err != nil {
			return fmt.Errorf("API key %q: %w", name, err)
		}
		if k.RevokedAt.IsZero() {
			k.RevokedAt = s.now().UTC()
		}
		k.Generation++
		return s.store.UpdateAPIKey(ctx, k)
	}, event(actor, ActionAPIKeyRevoked, KindAPIKey+":"+name, audit.Success))
}

// APIKeys lists the API keys (never their values) with their teams.
func (s *Service) APIKeys(ctx context.Context) ([]APIKey, error) {
	ks, err := s.store.APIKeys(ctx)
	if err != nil {
		return nil, err
	}
	for i := range ks {
		if ks[i].Teams, err = s.store.TeamsOf(ctx, KindAPIKey+":"+ks[i].Name); err != nil {
			return nil, err
		}
	}
	return ks, nil
}

// ActionSSO is the audit action of a sign-in through the OIDC provider.
const ActionSSO = "auth.sso"

// SSOIdentity is what the OIDC provider said of a user, mapped to Keyward's terms.
type SSOIdentity struct {
	Subject string // the issuer's subject: the user's stable id
	Name    string // a preferred user name, if any
	Role    Role
	Teams   []string
	MFA     bool // the provider says it asked for a second factor
}

// SignInSSO signs in a user the OIDC provider vouched for: the user is created on first sign-in
// (named after its preferred name when free, otherwise after its subject) and its role and teams
// follow the provider's groups at every sign-in. A disabled user is refused.
func (s *Service) SignInSSO(ctx context.Context, id SSOIdentity) (Token, error) {
	var principal string
	var generation int64
	err := s.store.Atomically(ctx, func(ctx context.Context) error {
		u, err := s.store.UserBySubject(ctx, id.Subject)
		if errors.Is(err, ErrNotFound) {
			u = User{Name: ssoName(id), Role: id.Role, OIDCSubject: id.Subject, CreatedAt: s.now().UTC()}
			if _, err := s.store.User(ctx, u.Name); err == nil {
				u.Name = ssoName(SSOIdentity{Subject: id.Subject})
			}
			if err := s.store.CreateUser(ctx, u); err != nil {
				return fmt.Errorf("user %q: %w", u.Name, err)
			}
			if err := s.record(ctx, event("sso:"+id.Subject, ActionUserCreated, KindUser+":"+u.Name, audit.Success, "role", string(u.Role), "via", "oidc")); err != nil {
				return err
			}
		} else if err != nil {
			return err
		}
		if !u.DisabledAt.IsZero() {
			return fmt.Errorf("%w: user disabled", ErrUnauthenticated)
		}
		if u.Role != id.Role {
			u.Role = id.Role
			if err := s.store.UpdateUser(ctx, u); err != nil {
				return err
			}
		}
		principal, generation = KindUser+":"+u.Name, u.Generation
		have, err := s.store.TeamsOf(ctx, principal)
		if err != nil {
			return err
		}
		for _, t := range have {
			if !slices.Contains(id.Teams, t) {
				if err := s.store.RemoveMember(ctx, t, principal); err != nil {
					return err
				}
			}
		}
		for _, t := range id.Teams {
			if _, err := s.store.Team(ctx, t); err == nil && !slices.Contains(have, t) {
				if err := s.store.AddMember(ctx, t, principal); err != nil {
					return err
				}
			}
		}
		return s.record(ctx, event(principal, ActionSSO, principal, audit.Success, "role", string(id.Role),
			"teams", strings.Join(id.Teams, ","), "mfa", fmt.Sprint(id.MFA)))
	})
	if err != nil {
		return Token{}, err
	}
	// Signed once the sign-in is recorded, outside the transaction: signing may call the KEK.
	t, exp, err := s.tokens.Issue(ctx, principal, generation, id.MFA)
	if err != nil {
		return Token{}, err
	}
	return Token{Token: secret.New(t), ExpiresAt: exp}, nil
}

// ssoName is a valid user name for an SSO identity: its preferred name, cleaned, or one derived
// from its subject.
func ssoName(id SSOIdentity) string {
	name := strings.ToLower(id.Name)
	if at := strings.IndexByte(name, '@'); at > 0 {
		name = name[:at]
	}
	if ValidateName("user", name) == nil {
		return name
	}
	sum := sha256.Sum256([]byte(id.Subject))
	return "sso-" + hex.EncodeToString(sum[:6])
}
