// Package auth decides who is calling and what they may do: users (local, with an Argon2id password
// and TOTP, or signed in through OIDC), API keys for machines, teams that own one cloud identity each,
// short-lived tokens signed with a key Keyward keeps in its vault, and the role-based rules that
// decide every request. It knows nothing of HTTP: the API layer asks it.
package auth

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"time"

	"github.com/keyward/keyward/internal/vault"
)

// Errors of the service and its Store.
var (
	ErrNotFound = errors.New("not found")
	ErrExists   = errors.New("already exists")
	// ErrUnauthenticated: the credentials given do not identify anyone. Its message never says
	// which part was wrong.
	ErrUnauthenticated = errors.New("invalid credentials")
	// ErrLocked: too many failed attempts; RetryAfter says for how long.
	ErrLocked = errors.New("too many failed attempts")
	// ErrForbidden: the principal may not do this.
	ErrForbidden = errors.New("forbidden")
	// ErrMFARequired: the principal's role needs a second factor for this, and it has not given one.
	ErrMFARequired = errors.New("a second factor is required")
	// ErrLastAdmin: the change would leave no enabled admin.
	ErrLastAdmin = errors.New("is the last enabled admin: add another admin first")
	// ErrInvalid: a value given (a name, a role, a password, a CIDR) is not acceptable; the error's
	// message names it.
	ErrInvalid = errors.New("invalid value")
)

// invalidError is a bad value, said in its own words, that is ErrInvalid.
type invalidError struct{ msg string }

func (e *invalidError) Error() string        { return e.msg }
func (e *invalidError) Is(target error) bool { return target == ErrInvalid }

func invalid(format string, args ...any) error {
	return &invalidError{msg: fmt.Sprintf(format, args...)}
}

// ErrBusy: too many logins at once; RetryAfter (a *BusyError) says when to try again.
var ErrBusy = errors.New("busy: too many logins at once")

// BusyError is ErrBusy with the time to wait.
type BusyError struct{ RetryAfter time.Duration }

func (e *BusyError) Error() string { return ErrBusy.Error() }
func (e *BusyError) Unwrap() error { return ErrBusy }

// LockedError is ErrLocked with the time to wait.
type LockedError struct{ RetryAfter time.Duration }

func (e *LockedError) Error() string {
	return fmt.Sprintf("%v: try again in %s", ErrLocked, e.RetryAfter.Round(time.Second))
}

func (e *LockedError) Unwrap() error { return ErrLocked }

// Role is what a principal may do.
type Role string

// Roles.
const (
	RoleAdmin    Role = "admin"    // everything
	RoleOperator Role = "operator" // start and force rotations, inventory and status; secrets of its own teams only
	RoleAuditor  Role = "auditor"  // the audit trail, inventory and reports; never a secret
	RoleMember   Role = "member"   // the current credentials of its own teams
	RoleReporter Role = "reporter" // report leaked keys, nothing else (a scanner's or AWS Health's API key)
)

// Roles lists the roles, most powerful first.
var Roles = []Role{RoleAdmin, RoleOperator, RoleAuditor, RoleMember, RoleReporter}

// ParseRole checks a role's name.
func ParseRole(s string) (Role, error) {
	if r := Role(s); slices.Contains(Roles, r) {
		return r, nil
	}
	return "", invalid("role %q: want one of admin, operator, auditor, member, reporter", s)
}

// Permission is what a route needs. Every route declares one; there is no default.
type Permission string

// Permissions.
const (
	// Public routes need no principal (probes, JWKS, the OpenAPI document, logging in).
	Public Permission = "public"
	// Authenticated routes need a principal, whatever its role.
	Authenticated Permission = "authenticated"
	// ReadCredentials: the current key of a team the principal is a member of (admin: any team).
	ReadCredentials Permission = "credentials:read"
	// Rotate: start a rotation, see rotations.
	Rotate Permission = "rotation:write"
	// ReadInventory: keys' metadata and status, never a secret.
	ReadInventory Permission = "inventory:read"
	// ReadAudit: the audit trail.
	ReadAudit Permission = "audit:read"
	// Export: every team's current credentials at once (admin, with MFA).
	Export Permission = "credentials:export"
	// Administer: users, teams and API keys.
	Administer Permission = "admin"
	// ReportLeak: report a key as exposed, which replaces and deactivates it at once.
	ReportLeak Permission = "leaks:report"
	// ReadReports: the compliance report and its trend.
	ReadReports Permission = "reports:read"
)

// grants is the whole access policy: what each role may do. Anything not here is denied.
var grants = map[Role][]Permission{
	RoleAdmin:    {Authenticated, ReadCredentials, Rotate, ReadInventory, ReadAudit, Export, Administer, ReportLeak, ReadReports},
	RoleOperator: {Authenticated, ReadCredentials, Rotate, ReadInventory, ReportLeak},
	RoleAuditor:  {Authenticated, ReadInventory, ReadAudit, ReadReports},
	RoleMember:   {Authenticated, ReadCredentials},
	RoleReporter: {Authenticated, ReportLeak},
}

// Can says whether a role holds a permission.
func (r Role) Can(p Permission) bool {
	return p == Public || slices.Contains(grants[r], p)
}

// Principal is who is calling: a user or an API key, with its role and teams as they are now.
type Principal struct {
	Kind  string   `json:"kind"` // user or apikey
	Name  string   `json:"name"`
	Role  Role     `json:"role"`
	Teams []string `json:"teams"`
	// MFA: this principal proved a second factor (a TOTP code at login, or the IdP said so).
	MFA bool `json:"mfa"`
	// MFAEnrolled: a local user with TOTP set up.
	MFAEnrolled bool `json:"mfa_enrolled"`
	// CIDRs an API key may be used from (none: anywhere the server allows).
	CIDRs []netip.Prefix `json:"cidrs,omitempty"`
	// ExpiresAt is when the token or API key used stops working (zero: never).
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	// via says how the principal authenticated: token or apikey.
	Via string `json:"via"`
	// requireMFA: the role is one of require_mfa: it needs a second factor for what can lead to a
	// secret (see Authorize).
	requireMFA bool
	// sso: a user the OIDC provider signs in, whose second factor is the provider's to ask.
	sso bool
}

// Principal kinds.
const (
	KindUser   = "user"
	KindAPIKey = "apikey"
)

// ID names the principal for the audit trail and memberships: "user:alice", "apikey:ci".
func (p *Principal) ID() string { return p.Kind + ":" + p.Name }

// NeedsEnrolment says whether the principal is a user whose role needs a second factor and who has
// no authenticator yet: the web pages send such a user to enrol one.
func (p *Principal) NeedsEnrolment() bool {
	return p.Kind == KindUser && p.requireMFA && !p.MFAEnrolled && !p.MFA && !p.sso
}

// SSO says whether the principal is a user the OIDC provider signs in (its second factor, where
// its role needs one, is asked by the provider, not by an authenticator enrolled here).
func (p *Principal) SSO() bool { return p.sso }

// InTeam says whether the principal is a member of team.
func (p *Principal) InTeam(team string) bool { return slices.Contains(p.Teams, team) }

// Authorize says whether p may use a permission; team is the team the request is about ("" none).
// It returns nil, ErrForbidden or ErrMFARequired.
//
// A second factor, for the roles in require_mfa, guards every permission that can lead to a secret:
// reading one, and administration (a new user, API key, team or membership is a way to read one).
// An API key is a machine and cannot give a second factor: it reads only its own teams' keys,
// whatever its role, never exports, and administers only when its role needs no second factor.
func (p *Principal) Authorize(perm Permission, team string) error {
	if perm == Public {
		return nil
	}
	if p == nil || !p.Role.Can(perm) {
		return ErrForbidden
	}
	switch perm {
	case ReadCredentials:
		if !p.InTeam(team) && (p.Role != RoleAdmin || p.Kind != KindUser) {
			return ErrForbidden
		}
		if p.Kind == KindUser && p.requireMFA && !p.MFA {
			return ErrMFARequired
		}
	case Administer:
		if p.requireMFA && !p.MFA {
			return ErrMFARequired
		}
	case Export:
		if p.Kind != KindUser || !p.MFA {
			return ErrMFARequired
		}
	}
	return nil
}

// Team owns one cloud identity: its members share its key.
type Team struct {
	Name      string         `json:"name"`
	Identity  vault.Identity `json:"identity"`
	Members   []string       `json:"members"` // principal ids
	CreatedAt time.Time      `json:"created_at"`
	// SessionOnly: members and API keys get session credentials made with the key, never the key.
	SessionOnly bool `json:"session_only"`
}

// TeamsByIdentity names the teams of each identity (an identity may belong to several teams).
func TeamsByIdentity(teams []Team) map[vault.Identity][]string {
	by := map[vault.Identity][]string{}
	for _, t := range teams {
		by[t.Identity] = append(by[t.Identity], t.Name)
	}
	return by
}

// User is a person.
type User struct {
	Name         string    `json:"name"`
	Role         Role      `json:"role"`
	PasswordHash string    `json:"-"`
	OIDCSubject  string    `json:"oidc_subject,omitempty"`
	MFAEnrolled  bool      `json:"mfa_enrolled"`
	DisabledAt   time.Time `json:"disabled_at,omitzero"`
	Generation   int64     `json:"-"` // tokens issued before the generation changed are revoked
	CreatedAt    time.Time `json:"created_at"`
	Teams        []string  `json:"teams"`
}

// APIKey is a machine's credential. Only a hash of its secret is kept.
type APIKey struct {
	Name       string         `json:"name"`
	KeyID      string         `json:"key_id"`
	Hash       string         `json:"-"`
	Role       Role           `json:"role"`
	CIDRs      []netip.Prefix `json:"cidrs"`
	ExpiresAt  time.Time      `json:"expires_at,omitzero"`
	RevokedAt  time.Time      `json:"revoked_at,omitzero"`
	Generation int64          `json:"-"`
	CreatedAt  time.Time      `json:"created_at"`
	Teams      []string       `json:"teams"`
}

// Failures counts failed logins of one subject ("user:NAME" or "ip:ADDR").
type Failures struct {
	Count       int64
	LastAt      time.Time
	LockedUntil time.Time
}

// OIDCLogin is a sign-in under way.
type OIDCLogin struct {
	State     string
	Nonce     string
	Verifier  string
	ExpiresAt time.Time
}

// Store keeps users, teams, API keys and login state. Methods join the unit of work ctx carries.
type Store interface {
	Atomically(ctx context.Context, fn func(ctx context.Context) error) error

	CreateUser(ctx context.Context, u User) error // ErrExists
	User(ctx context.Context, name string) (User, error)
	UserBySubject(ctx context.Context, subject string) (User, error)
	Users(ctx context.Context) ([]User, error)
	UpdateUser(ctx context.Context, u User) error // role, password hash, subject, MFA, disabled, generation
	DeleteUser(ctx context.Context, name string) error

	CreateTeam(ctx context.Context, t Team) error        // ErrExists (the name, or the identity)
	Team(ctx context.Context, name string) (Team, error) // without its members (read on every request)
	Teams(ctx context.Context) ([]Team, error)           // with their members
	DeleteTeam(ctx context.Context, name string) error
	AddMember(ctx context.Context, team, principal string) error
	RemoveMember(ctx context.Context, team, principal string) error
	// TeamsOf lists the teams a principal ("user:alice") is a member of, by name.
	TeamsOf(ctx context.Context, principal string) ([]string, error)

	CreateAPIKey(ctx context.Context, k APIKey) error // ErrExists
	APIKey(ctx context.Context, name string) (APIKey, error)
	APIKeyByID(ctx context.Context, keyID string) (APIKey, error)
	APIKeys(ctx context.Context) ([]APIKey, error)
	UpdateAPIKey(ctx context.Context, k APIKey) error // revoked, generation

	LoginFailures(ctx context.Context, subject string) (Failures, error) // zero when none
	// ReserveLoginAttempt counts an attempt of subject before its password is checked, atomically
	// however many race: it returns the attempt's place in the count, or 0 and the lock's end when
	// the subject is locked now. The attempt that reaches limit (0: none) locks it for window.
	ReserveLoginAttempt(ctx context.Context, subject string, limit int64, now time.Time, window time.Duration) (int64, time.Time, error)
	// ReleaseLoginAttempt gives back a reserved place (the attempt succeeded).
	ReleaseLoginAttempt(ctx context.Context, subject string, limit int64) error
	ClearLoginFailures(ctx context.Context, subject string) error
	// UseTOTPStep records that a TOTP code of the given time step signed the user in, and reports
	// false when a code of that step or a later one already did.
	UseTOTPStep(ctx context.Context, user string, step int64) (bool, error)

	PutOIDCLogin(ctx context.Context, l OIDCLogin) error
	// TakeOIDCLogin returns and deletes a sign-in under way: it can be used once. ErrNotFound.
	TakeOIDCLogin(ctx context.Context, state string) (OIDCLogin, error)
}

var (
	nameRe = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)
)

// ValidateName checks the name of a user, team or API key: 1 to 63 of lower-case letters, digits,
// '.', '_' and '-', starting with a letter or digit. Names are compared exactly: no case folding, no
// decoding, so "Team-A" and "team-a%2F" are not "team-a".
func ValidateName(kind, name string) error {
	if !nameRe.MatchString(name) {
		return invalid("%s name %q: want 1 to 63 of a-z, 0-9, '.', '_' and '-', starting with a letter or digit", kind, name)
	}
	return nil
}
