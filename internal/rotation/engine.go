// Package rotation is the rotation engine: policy, the persisted state machine of one rotation, and
// the lifecycle of the keys it replaces.
//
// The order of cloud calls, and why it is safe:
//
//  1. Plan: list the user's keys. Room for a new key is made only by deleting an inactive key that
//     Keyward itself retired (or a foreign inactive one under an explicit rule); an active key is never
//     deleted to make room. Two active keys: the user is blocked.
//  2. Create: the rotation record is written (create/started) before CreateAccessKey, and the new
//     secret is sealed into the vault as a pending version before anything else, in the same
//     transaction as verify/started. A crash between the two leaves a key that only the open record
//     can account for: on resume, a key of this user that is in the cloud, not in the vault, and no
//     older than the record is deleted, and creation retried.
//  3. Verify: STS GetCallerIdentity signed with the new key must succeed three times in a row before
//     the verify timeout. On failure the new key is deleted and its version destroyed; the old key was
//     never touched.
//  4. Promote: new → current, old → previous, and the rotation finished, in one transaction. Only now
//     do consumers get the new key; the old one stays active.
//  5. Deactivate the previous key once DeactivateAfter has passed — unless it was used after the new
//     key became current and has not been quiet for QuietPeriod: then it is held.
//  6. Delete it once DeleteAfter has passed since deactivation, and shred its secret in the vault.
//
// Every step is recorded before and after it runs — a rotation is three durable transactions, each
// recording one step done and the next started (Store.Atomically) — and a restart resumes from the
// record. Steps 5 and 6 are idempotent by construction: the vault's version state and the cloud's
// key state are reconciled at the start of every visit, so a crash between a cloud call and its vault
// record is repaired.
package rotation

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/backoff"
	"github.com/keyward/keyward/internal/cloud"
	"github.com/keyward/keyward/internal/vault"
)

// Outcome of one visit of one user.
type Outcome string

// Outcomes, as the rotate command's summary counts them.
const (
	Rotated     Outcome = "rotated"
	Deactivated Outcome = "deactivated"
	Deleted     Outcome = "deleted"
	Held        Outcome = "held"
	Blocked     Outcome = "blocked"
	Failed      Outcome = "failed"
	Skipped     Outcome = "skipped" // nothing due, in progress elsewhere, or backing off after failures
	Exempt      Outcome = "exempt"
)

// Action is one thing done to one key.
type Action struct {
	Kind  ActionKind `json:"action"`
	KeyID string     `json:"access_key_id"`
}

// Result is what a visit of one user did.
type Result struct {
	Identity vault.Identity `json:"identity"`
	Outcome  Outcome        `json:"outcome"`
	Reason   string         `json:"reason,omitempty"`
	Actions  []Action       `json:"actions,omitempty"`
}

func (r *Result) did(kind ActionKind, keyID string) {
	r.Actions = append(r.Actions, Action{Kind: kind, KeyID: keyID})
}

// Hook is called at named points of the protocol; tests use it to crash the engine there. A non-nil
// error stops the visit at once, doing nothing more, as a killed process would.
type Hook func(point string) error

// Engine runs the protocol. Make one with New; it is safe for concurrent use on different users.
type Engine struct {
	Cloud  cloud.Provider
	Vault  *vault.Vault
	Store  Store
	Policy Policy
	Owner  string // this process, for rotation leases
	Log    *slog.Logger
	Now    func() time.Time
	Sleep  func(ctx context.Context, d time.Duration) error
	Hook   Hook
	Audit  Recorder // nil records nothing
	// Notifier, when set, is given the notices the steps call for, in their transactions.
	Notifier Notifier
	// NoticeLead is how long before an old key's deactivation its owners are told (0: not told).
	NoticeLead time.Duration
	// Observe, when set, is told of every rotation that finished (rotated or failed) and how long
	// it took from its start (metrics).
	Observe func(outcome string, took time.Duration)

	// LeaseTTL is how long a rotation stays claimed without a write (default 5 minutes).
	LeaseTTL time.Duration
	// OwnerGone, when set, says whether the process that holds a lease is known to be gone (it
	// crashed on this host); its rotation is then taken over at once instead of after the lease.
	OwnerGone func(owner string) bool
	// VerifyInterval is the pause between verification calls, doubled after each refusal (default 1 s).
	VerifyInterval time.Duration
	// RetryBackoff is the wait after a failed rotation, doubled per consecutive failure (default 10 minutes, at most 24 h).
	RetryBackoff time.Duration
	// owners are the visited user's owners, in the copy of the engine a visit runs on (forUser).
	owners []string

	// OnDemand runs the rotations asked for now (default: 4 at once, 10 minutes each); whoever runs
	// the engine stops it before closing the database.
	OnDemand *OnDemand
}

// New returns an engine with defaults filled in for the fields left zero.
func New(e Engine) *Engine {
	if e.Log == nil {
		e.Log = slog.New(slog.DiscardHandler)
	}
	if e.Now == nil {
		e.Now = time.Now
	}
	if e.Sleep == nil {
		e.Sleep = func(ctx context.Context, d time.Duration) error {
			t := time.NewTimer(d)
			defer t.Stop()
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-t.C:
				return nil
			}
		}
	}
	if e.LeaseTTL == 0 {
		e.LeaseTTL = 5 * time.Minute
	}
	if e.VerifyInterval == 0 {
		e.VerifyInterval = time.Second
	}
	if e.RetryBackoff == 0 {
		e.RetryBackoff = 10 * time.Minute
	}
	if e.OnDemand == nil {
		e.OnDemand = NewOnDemand(4, 10*time.Minute)
	}
	return &e
}

func (e *Engine) now() time.Time { return e.Now().UTC() }

func (e *Engine) lease() time.Time { return e.now().Add(e.LeaseTTL) }

// crashAt runs the hook at a named point; its error, wrapped in ErrCrashed, stops the visit.
func (e *Engine) crashAt(point string) error {
	if e.Hook == nil {
		return nil
	}
	if err := e.Hook(point); err != nil {
		return fmt.Errorf("%w: %v", ErrCrashed, err)
	}
	return nil
}

// ErrCrashed wraps a Hook's error so callers can tell a simulated crash from a failure.
var ErrCrashed = errors.New("stopped by hook")

// Visit brings one user up to date: reconcile cloud and vault, resume an open rotation, retire old
// keys that are due, and rotate when the key is due (or force). It returns an error only when the
// visit was cut short (a hook, a cancelled context); a failed rotation is a Result, not an error.
func (e *Engine) Visit(ctx context.Context, u cloud.User, opts VisitOptions) (Result, error) {
	id := vault.Identity{Cloud: vault.CloudAWS, AccountID: u.AccountID, UserName: u.Name}
	res := Result{Identity: id, Outcome: Skipped}
	e = e.forUser(u)
	pol, exempt, err := e.policyFor(ctx, u)
	if err != nil {
		res.Outcome, res.Reason = Failed, err.Error()
		return res, nil
	}
	if exempt {
		res.Outcome = Exempt
		return res, nil
	}
	// An open rotation — interrupted here or running elsewhere — comes first.
	if rec, open, err := e.Store.Open(ctx, id); err != nil {
		return e.cut(res, err)
	} else if open {
		return e.resume(ctx, pol, rec, res, opts)
	}
	keys, versions, adopt, err := e.reconcile(ctx, id)
	if err != nil {
		return e.cut(res, err)
	}
	if err := e.retire(ctx, pol, id, versions, &res); err != nil {
		return e.cut(res, err)
	}
	if len(res.Actions) > 0 { // a key was retired: what follows works on the keys as they are now
		if keys, versions, adopt, err = e.reconcile(ctx, id); err != nil {
			return e.cut(res, err)
		}
	}
	return e.rotateIfDue(ctx, pol, keyState{id: id, keys: keys, versions: versions, adopt: adopt}, res, opts)
}

// policyFor is the policy of one user (its tags and, when an exempt group is set, its groups).
func (e *Engine) policyFor(ctx context.Context, u cloud.User) (Policy, bool, error) {
	var groups []string
	if e.Policy.ExemptGroup != "" {
		g, err := e.Cloud.UserGroups(ctx, u.AccountID, u.Name)
		if err != nil {
			return Policy{}, false, fmt.Errorf("list groups: %w", err)
		}
		groups = g
	}
	return e.Policy.For(u, groups)
}

// resume takes up a rotation found open: interrupted here, or held by a process that is gone; one
// running elsewhere is left to it (its id still goes to OnBegin).
func (e *Engine) resume(ctx context.Context, pol Policy, rec Record, res Result, opts VisitOptions) (Result, error) {
	err := e.Store.Resume(ctx, rec.ID, e.Owner, e.now(), e.lease(), "")
	if errors.Is(err, ErrBusy) && e.OwnerGone != nil && rec.LeaseOwner != "" && e.OwnerGone(rec.LeaseOwner) {
		e.Log.Warn("taking over the rotation of a process that is gone", "identity", rec.Identity.String(), "owner", rec.LeaseOwner)
		err = e.Store.Resume(ctx, rec.ID, e.Owner, e.now(), e.lease(), rec.LeaseOwner)
	}
	if errors.Is(err, ErrBusy) {
		res.Reason = "rotation in progress elsewhere"
		opts.begun(rec)
		return res, nil
	} else if err != nil {
		return e.cut(res, err)
	}
	opts.begun(rec)
	return e.drive(ctx, pol, rec, res, true)
}

// keyState is a user's keys as the cloud and the vault hold them at one moment of a visit, and the
// one active key to adopt when the vault knows none.
type keyState struct {
	id       vault.Identity
	keys     []cloud.AccessKey
	versions []vault.Version
	adopt    *cloud.AccessKey
}

// rotateIfDue rotates the user's current key if decideRotation says it is due, and otherwise records
// a key to adopt alone.
func (e *Engine) rotateIfDue(ctx context.Context, pol Policy, ks keyState, res Result, opts VisitOptions) (Result, error) {
	current := currentVersion(ks.versions)
	if ks.adopt != nil {
		current = &vault.Version{Identity: ks.id, AccessKeyID: ks.adopt.ID, State: vault.StateCurrent, CreatedAt: ks.adopt.CreatedAt.UTC()}
	}
	if current == nil {
		if len(activeKeys(ks.keys)) > 1 {
			res.Outcome, res.Reason = Blocked, ReasonTwoUnknownActive
			if err := e.record(ctx, e.event(ActionBlocked, ks.id, audit.Success, "reason", res.Reason)); err != nil {
				return e.cut(res, err)
			}
		} else {
			res.Reason = ReasonNoActiveKey
		}
		return res, nil
	}
	now := e.now()
	// The key's age first: the last rotation is read only for a user whose key is due.
	if !decideRotation(pol, rotationFacts{CreatedAt: current.CreatedAt, Last: nil, Force: opts.Force, Backoff: e.backoff, Now: now}).due(now) {
		return e.adopt(ctx, ks.id, ks.adopt, res)
	}
	last, err := e.lastFinished(ctx, ks.id)
	if err != nil {
		return e.cut(res, err)
	}
	d := decideRotation(pol, rotationFacts{CreatedAt: current.CreatedAt, Last: last, Force: opts.Force, Backoff: e.backoff, Now: now})
	if !d.due(now) {
		res.Reason = d.Reason
		return e.adopt(ctx, ks.id, ks.adopt, res)
	}
	return e.rotate(ctx, rotationStart{pol: pol, ks: ks, current: current, attempt: d.Attempt, opts: opts}, res)
}

// cut turns an error that stops a visit into its result: a hook's crash is returned as an error,
// anything else is a failure of this user only.
func (e *Engine) cut(res Result, err error) (Result, error) {
	if errors.Is(err, ErrCrashed) || errors.Is(err, context.Canceled) {
		return res, err
	}
	res.Outcome, res.Reason = Failed, err.Error()
	return res, nil
}

func (e *Engine) backoff(attempt int) time.Duration {
	return backoff.Exponential(e.RetryBackoff, 24*time.Hour, attempt)
}

// activeKeys returns the keys that are active in the cloud.
func activeKeys(keys []cloud.AccessKey) []cloud.AccessKey {
	var active []cloud.AccessKey
	for _, k := range keys {
		if k.Status == cloud.KeyActive {
			active = append(active, k)
		}
	}
	return active
}

// keyStates maps every access key id the vault has a version of, destroyed ones included, to its
// state: a key the vault ever held is Keyward's, never "foreign".
func keyStates(versions []vault.Version) map[string]vault.State {
	states := map[string]vault.State{}
	for _, v := range versions {
		states[v.AccessKeyID] = v.State
	}
	return states
}

func stateOf(versions []vault.Version, number int64) vault.State {
	for _, v := range versions {
		if v.Number == number {
			return v.State
		}
	}
	return ""
}

func currentVersion(versions []vault.Version) *vault.Version {
	for i := range versions {
		if versions[i].State == vault.StateCurrent {
			return &versions[i]
		}
	}
	return nil
}

// reconcile makes the vault agree with the cloud before anything is decided: versions whose key is
// gone are destroyed, previous versions whose key is inactive are marked inactive. For a user the
// vault does not know yet, it returns the one active key to adopt, without writing it (see adopt).
func (e *Engine) reconcile(ctx context.Context, id vault.Identity) ([]cloud.AccessKey, []vault.Version, *cloud.AccessKey, error) {
	keys, err := e.Cloud.ListAccessKeys(ctx, id.AccountID, id.UserName)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("list keys: %w", err)
	}
	versions, err := e.Vault.VersionsOf(ctx, id)
	if err != nil {
		return nil, nil, nil, err
	}
	inCloud := map[string]cloud.AccessKey{}
	for _, k := range keys {
		inCloud[k.ID] = k
	}
	changed := false
	for _, v := range versions {
		k, exists := inCloud[v.AccessKeyID]
		switch {
		case v.State == vault.StateDestroyed:
		case !exists && v.State != vault.StateCurrent:
			// Deleted (by us before a crash, or by someone else): its secret must go too.
			if err := e.recorded(ctx, func(ctx context.Context) error { return e.Vault.Destroy(ctx, id, v.Number) },
				e.event(ActionDestroyed, id, audit.Success, "access_key_id", v.AccessKeyID, "reason", "the key is gone from the cloud")); err != nil {
				return nil, nil, nil, err
			}
			changed = true
		case exists && v.State == vault.StatePrevious && k.Status == cloud.KeyInactive:
			if err := e.recorded(ctx, func(ctx context.Context) error { return e.Vault.Deactivate(ctx, id, v.Number) },
				e.event(ActionDeactivated, id, audit.Success, "access_key_id", v.AccessKeyID, "reason", "found inactive in the cloud")); err != nil {
				return nil, nil, nil, err
			}
			changed = true
		}
	}
	if changed {
		if versions, err = e.Vault.VersionsOf(ctx, id); err != nil {
			return nil, nil, nil, err
		}
	}
	if currentVersion(versions) == nil {
		if active := activeKeys(keys); len(active) == 1 {
			return keys, versions, &active[0], nil
		}
	}
	return keys, versions, nil, nil
}

// adopt records a key that predates Keyward (if key is not nil) as the identity's current version.
// Another process may have adopted it first: that is no error.
func (e *Engine) adopt(ctx context.Context, id vault.Identity, key *cloud.AccessKey, res Result) (Result, error) {
	if key == nil {
		return res, nil
	}
	err := e.recorded(ctx, func(ctx context.Context) error {
		_, err := e.Vault.Adopt(ctx, id, key.ID, key.CreatedAt)
		return err
	}, e.event(ActionAdopted, id, audit.Success, "access_key_id", key.ID))
	if errors.Is(err, vault.ErrDuplicate) {
		return res, nil // adopted meanwhile by another process
	} else if err != nil {
		return e.cut(res, err)
	}
	res.Actions = append([]Action{{Kind: KindAdopted, KeyID: key.ID}}, res.Actions...)
	return res, nil
}

// retire deactivates and deletes the old keys that are due, telling their owners ahead of a
// deactivation, and holds an old key still in use. An error cuts the visit short; what it did is
// added to res.
func (e *Engine) retire(ctx context.Context, pol Policy, id vault.Identity, versions []vault.Version, res *Result) error {
	current := currentVersion(versions)
	now := e.now()
	for _, v := range versions {
		switch {
		case v.State == vault.StatePrevious && current != nil && now.Before(current.CurrentAt.Add(pol.DeactivateAfter)):
			if at := current.CurrentAt.Add(pol.DeactivateAfter); e.NoticeLead > 0 && !now.Before(at.Add(-e.NoticeLead)) {
				if err := e.upcoming(ctx, id, v.AccessKeyID, at); err != nil {
					return err
				}
			}
		case v.State == vault.StatePrevious && current != nil:
			if err := e.deactivate(ctx, pol, retiring{old: v, current: *current}, res); err != nil {
				return err
			}
		case v.State == vault.StateInactive && !now.Before(v.InactiveAt.Add(pol.DeleteAfter)):
			if err := e.deleteRetired(ctx, id, v, res); err != nil {
				return err
			}
		}
	}
	return nil
}

// retiring is an old version on its way out, beside the identity's current one.
type retiring struct{ old, current vault.Version }

// deactivate deactivates a previous key that is due, unless it signed a request after the current
// key took over and has not been quiet since: then it is held.
func (e *Engine) deactivate(ctx context.Context, pol Policy, r retiring, res *Result) error {
	id, v, current := r.current.Identity, r.old, r.current
	lu, err := e.Cloud.AccessKeyLastUsed(ctx, id.AccountID, v.AccessKeyID)
	if err != nil {
		return fmt.Errorf("last use of %s: %w", v.AccessKeyID, err)
	}
	if pol.stillInUse(lu.At, current.CurrentAt, e.now()) {
		res.Outcome = Held
		res.Reason = fmt.Sprintf("old key %s still in use since %s", v.AccessKeyID, lu.At.Format(time.RFC3339))
		return e.record(ctx, e.event(ActionHeld, id, audit.Success, "access_key_id", v.AccessKeyID, "last_used", lu.At.Format(time.RFC3339)))
	}
	if err := e.crashAt("deactivate"); err != nil {
		return err
	}
	if err := e.Cloud.SetAccessKeyStatus(ctx, id.AccountID, id.UserName, v.AccessKeyID, cloud.KeyInactive); err != nil {
		return fmt.Errorf("deactivate %s: %w", v.AccessKeyID, err)
	}
	if err := e.crashAt("deactivated"); err != nil {
		return err
	}
	if err := e.recorded(ctx, func(ctx context.Context) error { return e.Vault.Deactivate(ctx, id, v.Number) },
		e.event(ActionDeactivated, id, audit.Success, "access_key_id", v.AccessKeyID)); err != nil {
		return err
	}
	res.did(KindDeactivated, v.AccessKeyID)
	if res.Outcome == Skipped {
		res.Outcome = Deactivated
	}
	return nil
}

// deleteRetired deletes an inactive key Keyward retired, once DeleteAfter has passed, and shreds
// its secret.
func (e *Engine) deleteRetired(ctx context.Context, id vault.Identity, v vault.Version, res *Result) error {
	if err := e.crashAt("delete"); err != nil {
		return err
	}
	if err := e.Cloud.DeleteAccessKey(ctx, id.AccountID, id.UserName, v.AccessKeyID); err != nil && !errors.Is(err, cloud.ErrNoSuchEntity) {
		return fmt.Errorf("delete %s: %w", v.AccessKeyID, err)
	}
	if err := e.crashAt("deleted"); err != nil {
		return err
	}
	if err := e.recorded(ctx, func(ctx context.Context) error { return e.Vault.Destroy(ctx, id, v.Number) },
		e.event(ActionDeleted, id, audit.Success, "access_key_id", v.AccessKeyID)); err != nil {
		return err
	}
	res.did(KindDeleted, v.AccessKeyID)
	if res.Outcome == Skipped || res.Outcome == Deactivated {
		res.Outcome = Deleted
	}
	return nil
}

// rotationStart is what a rotation begins from: the user's keys, its current version, and which
// attempt in a row this is, under its policy and the visit's options.
type rotationStart struct {
	pol     Policy
	ks      keyState
	current *vault.Version
	attempt int
	opts    VisitOptions
}

// rotate makes room for a new key and starts a rotation. A key to adopt (the user's first rotation)
// is recorded in the same transaction as the rotation's start.
func (e *Engine) rotate(ctx context.Context, st rotationStart, res Result) (Result, error) {
	id := st.ks.id
	if blocked, err := e.makeRoom(ctx, st.pol, st.ks, &res); err != nil {
		return e.cut(res, err)
	} else if blocked {
		return e.adopt(ctx, id, st.ks.adopt, res)
	}
	rec, err := e.begin(ctx, st)
	switch {
	case errors.Is(err, vault.ErrDuplicate), errors.Is(err, vault.ErrConflict):
		res.Reason = "taken under management meanwhile by another process"
		return res, nil
	case errors.Is(err, ErrBusy):
		res.Reason = "rotation in progress elsewhere"
		return res, nil
	case errors.Is(err, ErrStale):
		res.Reason = "rotated meanwhile by another process"
		return res, nil
	case err != nil:
		return e.cut(res, err)
	}
	if st.ks.adopt != nil {
		res.Actions = append([]Action{{Kind: KindAdopted, KeyID: st.ks.adopt.ID}}, res.Actions...)
	}
	st.opts.begun(rec)
	return e.drive(ctx, st.pol, rec, res, false)
}

// makeRoom deletes an inactive key Keyward may delete when the user holds two; with none to delete
// (never an active key), the user is blocked.
func (e *Engine) makeRoom(ctx context.Context, pol Policy, ks keyState, res *Result) (blocked bool, err error) {
	if len(ks.keys) < 2 {
		return false, nil
	}
	id := ks.id
	room := pol.roomFor(ks.keys, keyStates(ks.versions), e.now())
	if room == nil {
		res.Outcome, res.Reason = Blocked, noRoomReason(ks.keys)
		return true, e.record(ctx, e.event(ActionBlocked, id, audit.Success, "reason", res.Reason))
	}
	if err := e.Cloud.DeleteAccessKey(ctx, id.AccountID, id.UserName, room.ID); err != nil && !errors.Is(err, cloud.ErrNoSuchEntity) {
		return false, fmt.Errorf("delete %s to make room: %w", room.ID, err)
	}
	err = e.recorded(ctx, func(ctx context.Context) error {
		for _, v := range ks.versions {
			if v.AccessKeyID == room.ID {
				return e.Vault.Destroy(ctx, id, v.Number)
			}
		}
		return nil // a foreign key, deleted under a rule: the vault never held it
	}, e.event(ActionDeleted, id, audit.Success, "access_key_id", room.ID, "reason", "to make room for a new key"))
	if err != nil {
		return false, err
	}
	res.did(KindDeleted, room.ID)
	return false, nil
}

// begin writes the rotation's record (create/started), and the key to adopt with it, in one
// transaction: from here a restart resumes the rotation.
func (e *Engine) begin(ctx context.Context, st rotationStart) (Record, error) {
	id, now := st.ks.id, e.now()
	var rec Record
	err := e.Store.Atomically(ctx, func(ctx context.Context) error {
		var events []step
		if a := st.ks.adopt; a != nil {
			if _, err := e.Vault.Adopt(ctx, id, a.ID, a.CreatedAt); err != nil {
				return err
			}
			events = append(events, e.event(ActionAdopted, id, audit.Success, "access_key_id", a.ID))
		}
		var err error
		rec, err = e.Store.Begin(ctx, Record{Identity: id, Step: StepCreate, Phase: PhaseStarted, OldKeyID: st.current.AccessKeyID,
			Attempt: st.attempt, StartedAt: now, StepAt: now}, e.Owner, e.lease())
		if err != nil {
			return err
		}
		return e.record(ctx, append(events, e.event(ActionStarted, id, audit.Success, "old_key_id", st.current.AccessKeyID,
			"rotation", fmt.Sprint(rec.ID), "attempt", fmt.Sprint(st.attempt)))...)
	})
	return rec, err
}

func (e *Engine) observe(outcome string, rec Record) {
	if e.Observe != nil {
		e.Observe(outcome, e.now().Sub(rec.StartedAt))
	}
}

// arnUser returns the user name at the end of an IAM user ARN (after its path).
func arnUser(arn string) string {
	for i := len(arn) - 1; i >= 0; i-- {
		if arn[i] == '/' {
			return arn[i+1:]
		}
	}
	return ""
}
