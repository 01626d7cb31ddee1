// Package access hands teams' current keys to the principals allowed to have them, and starts
// rotations for those allowed to: it joins auth (who may), the vault (the secret), the rotation
// engine (a first key, a forced rotation) and the audit trail (every read, recorded before the secret
// is handed over). The API calls it; it knows nothing of HTTP.
package access

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/auth"
	"github.com/keyward/keyward/internal/cloud"
	"github.com/keyward/keyward/internal/rotation"
	"github.com/keyward/keyward/internal/vault"
)

// Errors, besides auth's ErrForbidden and ErrMFARequired.
var (
	ErrNoSuchTeam = errors.New("no such team")
	// ErrUnavailable: the team's key cannot be handed out or rotated now, for a reason of Keyward's
	// own (blocked, exempt, in progress elsewhere); the error's public message says which.
	ErrUnavailable = errors.New("unavailable")
	// ErrCloudUnavailable: the cloud (or the rotation it needed) did not answer as it should; trying
	// again later may work. The cloud's own words are in the error's cause, for the log only.
	ErrCloudUnavailable = errors.New("cloud unavailable")
	// ErrBusy: too many rotations under way at once; try again shortly.
	ErrBusy     = errors.New("busy")
	ErrNotFound = errors.New("not found")
)

// Error is a failure with two faces: Public tells the caller what failed and what to do, and holds
// nothing but Keyward's own words; Cause — the cloud's or the database's error text, which may name
// hosts, ARNs or request ids — is for the log only. Kind is one of this package's errors.
type Error struct {
	Kind   error
	Public string
	Cause  error
}

func (e *Error) Error() string {
	if e.Cause == nil {
		return e.Public
	}
	return e.Public + ": " + e.Cause.Error()
}

// Unwrap gives errors.Is and errors.As the kind and the cause.
func (e *Error) Unwrap() []error {
	if e.Cause == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Cause}
}

// PublicMessage is what the caller may be told.
func (e *Error) PublicMessage() string { return e.Public }

func failure(kind, cause error, format string, args ...any) error {
	return &Error{Kind: kind, Public: fmt.Sprintf(format, args...), Cause: cause}
}

// ActionKeyRead is the audit action of a secret handed out.
const ActionKeyRead = "key.read"

// Recorder keeps the audit trail.
type Recorder interface {
	Record(ctx context.Context, events ...audit.Event) error
}

// Service is the access layer.
type Service struct {
	Auth   *auth.Service
	Vault  *vault.Vault
	Engine *rotation.Engine
	Audit  Recorder
	// Store makes units of work (Import): the database the vault and the trail live in.
	Store interface {
		Atomically(ctx context.Context, fn func(ctx context.Context) error) error
	}
	// Sessions caches session credentials (nil: made when first needed).
	Sessions     *Sessions
	sessionsOnce sync.Once
	Now          func() time.Time
}

// Credential is a team's current key, with when its holder should fetch it again.
type Credential struct {
	Team string
	vault.Credential
	// Expiration is when the key is due to be replaced (its holder should fetch it again then);
	// zero when the policy exempts it.
	Expiration time.Time
}

func (s *Service) now() time.Time {
	if s.Now == nil {
		return time.Now()
	}
	return s.Now()
}

// team looks a team up after checking that p may use perm on it: a principal that may not learns
// nothing about whether the team exists.
func (s *Service) team(ctx context.Context, p *auth.Principal, perm auth.Permission, name string) (auth.Team, error) {
	if err := p.Authorize(perm, name); err != nil {
		return auth.Team{}, err
	}
	t, err := s.Auth.Team(ctx, name)
	if errors.Is(err, auth.ErrNotFound) {
		return t, fmt.Errorf("team %q: %w", name, ErrNoSuchTeam)
	}
	return t, err
}

// Credentials returns a team's current key to p, recording the read in the audit trail first. A team
// whose IAM user has no key yet gets its first one from the rotation engine.
func (s *Service) Credentials(ctx context.Context, p *auth.Principal, teamName string) (Credential, error) {
	t, err := s.team(ctx, p, auth.ReadCredentials, teamName)
	if err != nil {
		return Credential{}, err
	}
	if t.SessionOnly {
		return Credential{}, failure(ErrSessionOnly, nil, "team %s hands out session credentials only: ask for type=session", t.Name)
	}
	c, err := s.current(ctx, t)
	if err != nil {
		return Credential{}, err
	}
	if err := s.recordRead(ctx, p.ID(), c.Credential, map[string]string{"team": t.Name, "via": p.Via, "type": TypeKey}); err != nil {
		return Credential{}, err
	}
	return c, nil
}

// current returns a team's current key, provisioning the first one when there is none.
func (s *Service) current(ctx context.Context, t auth.Team) (Credential, error) {
	cred, err := s.Vault.Current(ctx, t.Identity)
	if errors.Is(err, vault.ErrNotFound) {
		u, err := s.user(ctx, t)
		if err != nil {
			return Credential{}, err
		}
		res, err := s.Engine.Provision(ctx, u, rotation.VisitOptions{})
		if errors.Is(err, rotation.ErrHasForeignKey) {
			return Credential{}, failure(ErrUnavailable, err, "team %s: its IAM user holds a key whose secret Keyward does not have: "+
				"import it with keyward vault import, or delete the key", t.Name)
		} else if errors.Is(err, rotation.ErrExempt) {
			return Credential{}, failure(ErrUnavailable, err, "team %s: its IAM user is exempt from rotation, so Keyward does not create its keys", t.Name)
		} else if err != nil || res.Outcome == rotation.Failed {
			return Credential{}, failure(ErrCloudUnavailable, orReason(err, res), "team %s: its first key could not be made; try again later "+
				"(operators find why in the log under this request's id)", t.Name)
		}
		cred, err = s.Vault.Current(ctx, t.Identity)
		if err != nil {
			return Credential{}, failure(ErrUnavailable, err, "team %s has no key yet: %s", t.Name, orOutcome(res))
		}
	} else if errors.Is(err, vault.ErrNoSecret) {
		return Credential{}, failure(ErrUnavailable, nil, "team %s: Keyward does not hold the secret of its current key; import it with keyward vault import", t.Name)
	} else if err != nil {
		return Credential{}, err
	}
	return Credential{Team: t.Name, Credential: cred, Expiration: s.expiration(cred.Version)}, nil
}

// user reads the team's IAM user from the cloud (its tags carry policy).
func (s *Service) user(ctx context.Context, t auth.Team) (cloud.User, error) {
	u, err := s.Engine.Cloud.GetUser(ctx, t.Identity.AccountID, t.Identity.UserName)
	if errors.Is(err, cloud.ErrNoSuchEntity) {
		return u, failure(ErrUnavailable, nil, "team %s: IAM user %s does not exist", t.Name, t.Identity)
	} else if err != nil && ctx.Err() == nil {
		return u, failure(ErrCloudUnavailable, err, "team %s: the cloud did not answer when asked for IAM user %s; try again later", t.Name, t.Identity)
	}
	return u, err
}

// orReason is err, or else a failed result's reason as an error.
func orReason(err error, res rotation.Result) error {
	if err != nil {
		return err
	}
	return errors.New(res.Reason)
}

// expiration is when a version is due for rotation under the policy (by path and name; tags would
// need a call to the cloud on every read). A version overdue (its rotation pending) expires in five
// minutes, so that its holder comes back for the new key soon.
func (s *Service) expiration(v vault.Version) time.Time {
	if s.Engine == nil { // the CLI's vault commands: no policy at hand
		return time.Time{}
	}
	pol, exempt, err := s.Engine.Policy.For(cloud.User{AccountID: v.Identity.AccountID, Name: v.Identity.UserName}, nil)
	if err != nil || exempt {
		return time.Time{}
	}
	due := v.CreatedAt.Add(pol.RotateAfter)
	if soon := s.now().Add(5 * time.Minute); due.Before(soon) {
		return soon.UTC().Truncate(time.Second)
	}
	return due.UTC()
}

// Export returns the current key of every identity the vault holds one for — a team's or not — to p
// (an admin who gave a second factor), with the teams that own it, recording one read per key, all in
// one transaction, before any is handed over. Keys whose secret Keyward does not hold are skipped.
func (s *Service) Export(ctx context.Context, p *auth.Principal) ([]Credential, error) {
	if err := p.Authorize(auth.Export, ""); err != nil {
		return nil, err
	}
	return s.ExportAll(ctx, s.Auth, p.ID(), p.Via)
}

// Teams lists the teams (auth.Service, or the store under it).
type Teams interface {
	Teams(ctx context.Context) ([]auth.Team, error)
}

// ExportAll is Export for a caller already allowed to (the CLI on the database host).
func (s *Service) ExportAll(ctx context.Context, ts Teams, actor, via string) ([]Credential, error) {
	teams, err := ts.Teams(ctx)
	if err != nil {
		return nil, err
	}
	owners := auth.TeamsByIdentity(teams)
	versions, err := s.Vault.List(ctx)
	if err != nil {
		return nil, err
	}
	var out []Credential
	var events []audit.Event
	for _, v := range versions {
		if v.State != vault.StateCurrent || !v.HasSecret {
			continue
		}
		cred, err := s.Vault.Reveal(ctx, v.Identity, v.Number)
		if err != nil {
			return nil, err
		}
		team := strings.Join(owners[v.Identity], " ")
		out = append(out, Credential{Team: team, Credential: cred, Expiration: s.expiration(cred.Version)})
		events = append(events, readEvent(actor, cred, map[string]string{"team": team, "via": via, "bulk": "export", "type": TypeKey}))
	}
	if err := s.Audit.Record(ctx, events...); err != nil {
		return nil, fmt.Errorf("nothing handed over: %w", err)
	}
	return out, nil
}

// onDemandWait is how long Rotate waits for a place on the engine's on-demand runner.
const onDemandWait = 5 * time.Second

// Rotate starts a rotation of a team's key now, whatever its age, and returns the rotation's id as
// soon as its beginning is recorded — or the id of the rotation already open for the team's
// identity, here or elsewhere. The rotation goes on in the background on the engine's on-demand
// runner (bounded, stopped at shutdown); ctx's end does not stop it. A rotation that cannot begin
// (blocked, exempt) is ErrUnavailable with the engine's reason; a cloud that does not answer is
// ErrCloudUnavailable.
func (s *Service) Rotate(ctx context.Context, p *auth.Principal, teamName string) (int64, error) {
	t, err := s.team(ctx, p, auth.Rotate, teamName)
	if err != nil {
		return 0, err
	}
	u, err := s.user(ctx, t)
	if err != nil {
		return 0, err
	}
	return s.rotateNow(ctx, "team "+t.Name, t.Identity, u)
}

// RotateIdentity is Rotate for any identity Keyward manages, a team's or not (operators and
// admins: rotating is theirs on every identity; members rotate nothing).
func (s *Service) RotateIdentity(ctx context.Context, p *auth.Principal, id vault.Identity) (int64, error) {
	if err := p.Authorize(auth.Rotate, ""); err != nil {
		return 0, err
	}
	u, err := s.Engine.Cloud.GetUser(ctx, id.AccountID, id.UserName)
	if errors.Is(err, cloud.ErrNoSuchEntity) {
		return 0, failure(ErrUnavailable, nil, "IAM user %s does not exist", id)
	} else if err != nil {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		return 0, failure(ErrCloudUnavailable, err, "the cloud did not answer when asked for IAM user %s; try again later", id)
	}
	return s.rotateNow(ctx, "IAM user "+id.String(), id, u)
}

// rotateNow forces a rotation of u (whose vault identity is id) on the on-demand runner; what names
// it in errors.
func (s *Service) rotateNow(ctx context.Context, what string, id vault.Identity, u cloud.User) (int64, error) {
	started := make(chan int64, 1)
	finished := make(chan rotation.Result, 1)
	opts := rotation.VisitOptions{Force: true, OnBegin: func(r rotation.Record) {
		select {
		case started <- r.ID:
		default:
		}
	}}
	err := s.Engine.OnDemand.Go(onDemandWait, func(ctx context.Context) {
		var res rotation.Result
		var err error
		// A team without a current key gets its first one; whether it has one is metadata: no secret
		// is opened for it.
		versions, verr := s.Vault.VersionsOf(ctx, id)
		if verr == nil && !slices.ContainsFunc(versions, func(v vault.Version) bool { return v.State == vault.StateCurrent }) {
			res, err = s.Engine.Provision(ctx, u, opts)
		} else {
			res, err = s.Engine.Visit(ctx, u, opts)
		}
		if err != nil {
			res.Outcome, res.Reason = rotation.Failed, err.Error()
		}
		finished <- res
	})
	if err != nil {
		return 0, failure(ErrBusy, err, "too many rotations are under way; try again shortly")
	}
	select {
	case id := <-started:
		return id, nil
	case res := <-finished:
		select {
		case id := <-started:
			return id, nil
		default:
		}
		if res.Outcome == rotation.Failed {
			return 0, failure(ErrCloudUnavailable, errors.New(res.Reason), "%s: the rotation could not begin; try again later "+
				"(operators find why in the log under this request's id)", what)
		}
		return 0, failure(ErrUnavailable, nil, "%s: %s", what, orOutcome(res))
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

func orOutcome(res rotation.Result) string {
	if res.Reason != "" {
		return res.Reason
	}
	return string(res.Outcome)
}

// Rotation returns a rotation's record (operators and admins).
func (s *Service) Rotation(ctx context.Context, p *auth.Principal, id int64) (rotation.Record, error) {
	if err := p.Authorize(auth.Rotate, ""); err != nil {
		return rotation.Record{}, err
	}
	r, err := s.Engine.Store.Get(ctx, id)
	if errors.Is(err, rotation.ErrNotFound) {
		return r, fmt.Errorf("rotation %d: %w", id, ErrNotFound)
	}
	return r, err
}

// ErrBadRequest: the report names no valid key.
var ErrBadRequest = errors.New("bad request")

// leakDeadline bounds the emergency response started by a report: it goes on if the caller leaves.
const leakDeadline = 5 * time.Minute

// ReportLeak answers a report of an exposed key by p (operators, admins, the reporter role): the leak
// is recorded first, then the key is replaced and deactivated (see rotation.Engine.RespondToLeak).
// via says how the report came (api, aws-health). The response waits for the emergency rotation.
func (s *Service) ReportLeak(ctx context.Context, p *auth.Principal, keyID, reason, via string, deactivateUnmanaged bool) (rotation.LeakResponse, error) {
	if err := p.Authorize(auth.ReportLeak, ""); err != nil {
		return rotation.LeakResponse{}, err
	}
	if !rotation.ValidKeyID(keyID) {
		return rotation.LeakResponse{}, failure(ErrBadRequest, nil, "access key id %q: want AKIA… or ASIA… and 16 more letters and digits", keyID)
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), leakDeadline)
	defer cancel()
	resp, err := s.Engine.RespondToLeak(ctx, rotation.LeakReport{KeyID: keyID, ReportedBy: p.ID(), Via: via, Reason: reason,
		DeactivateUnmanaged: deactivateUnmanaged})
	if err != nil {
		return resp, failure(ErrCloudUnavailable, err, "the leak of %s is recorded, but the response could not finish: "+
			"every pass tries again (operators find why in the log under this request's id)", keyID)
	}
	return resp, nil
}

// TeamKey is what a member sees of a team's key without asking for its secret.
type TeamKey struct {
	Team        string
	Identity    vault.Identity
	SessionOnly bool
	NeedsMFA    bool      // the principal must log in with a second factor to read it
	AccessKeyID string    // "" when the team has no key yet (its first read makes one)
	CreatedAt   time.Time // of the current key
	Expiration  time.Time // when it is due to be replaced (zero: exempt)
}

// TeamKeys returns, without any secret, the current key of each of p's teams.
func (s *Service) TeamKeys(ctx context.Context, p *auth.Principal) ([]TeamKey, error) {
	var out []TeamKey
	for _, name := range p.Teams {
		needsMFA := false
		t, err := s.team(ctx, p, auth.ReadCredentials, name)
		if errors.Is(err, auth.ErrMFARequired) { // a member's own team: what it is may be shown, not its secret
			needsMFA = true
			t, err = s.Auth.Team(ctx, name)
		}
		if errors.Is(err, auth.ErrForbidden) || errors.Is(err, ErrNoSuchTeam) || errors.Is(err, auth.ErrNotFound) {
			continue
		} else if err != nil {
			return nil, err
		}
		k := TeamKey{Team: t.Name, Identity: t.Identity, SessionOnly: t.SessionOnly, NeedsMFA: needsMFA}
		versions, err := s.Vault.VersionsOf(ctx, t.Identity)
		if err != nil {
			return nil, err
		}
		for _, v := range versions {
			if v.State == vault.StateCurrent {
				k.AccessKeyID, k.CreatedAt, k.Expiration = v.AccessKeyID, v.CreatedAt, s.expiration(v)
			}
		}
		out = append(out, k)
	}
	return out, nil
}
