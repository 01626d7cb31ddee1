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
	fail := func(format string, args ...any) (Result, error) {
		res.Outcome, res.Reason = Failed, fmt.Sprintf(format, args...)
		return res, nil
	}
	var groups []string
	if e.Policy.ExemptGroup != "" {
		g, err := e.Cloud.UserGroups(ctx, u.AccountID, u.Name)
		if err != nil {
			return fail("list groups: %v", err)
		}
		groups = g
	}
	pol, exempt, err := e.Policy.For(u, groups)
	if err != nil {
		return fail("%v", err)
	}
	if exempt {
		res.Outcome = Exempt
		return res, nil
	}

	// An open rotation — interrupted here or running elsewhere — comes first.
	if rec, open, err := e.Store.Open(ctx, id); err != nil {
		return fail("%v", err)
	} else if open {
		err := e.Store.Resume(ctx, rec.ID, e.Owner, e.now(), e.lease(), "")
		if errors.Is(err, ErrBusy) && e.OwnerGone != nil && rec.LeaseOwner != "" && e.OwnerGone(rec.LeaseOwner) {
			e.Log.Warn("taking over the rotation of a process that is gone", "identity", id.String(), "owner", rec.LeaseOwner)
			err = e.Store.Resume(ctx, rec.ID, e.Owner, e.now(), e.lease(), rec.LeaseOwner)
		}
		if errors.Is(err, ErrBusy) {
			res.Reason = "rotation in progress elsewhere"
			opts.begun(rec)
			return res, nil
		} else if err != nil {
			return fail("%v", err)
		}
		opts.begun(rec)
		return e.run(ctx, pol, rec, res, true)
	}

	keys, versions, adopt, err := e.reconcile(ctx, id)
	if err != nil {
		return e.cut(res, err)
	}
	// A key to adopt is written alone, unless a rotation begins: then with the rotation's record.
	adoptAlone := func(res Result) (Result, error) { return e.adopt(ctx, id, adopt, res) }
	if r, done, err := e.retire(ctx, pol, id, versions, &res); err != nil || done {
		return r, err
	}
	if len(res.Actions) > 0 { // a key was retired: what follows works on the keys as they are now
		if keys, versions, adopt, err = e.reconcile(ctx, id); err != nil {
			return e.cut(res, err)
		}
	}
	current := currentVersion(versions)
	if adopt != nil {
		current = &vault.Version{Identity: id, AccessKeyID: adopt.ID, State: vault.StateCurrent, CreatedAt: adopt.CreatedAt.UTC()}
	}
	if current == nil {
		if len(activeKeys(keys)) > 1 {
			res.Outcome, res.Reason = Blocked, ReasonTwoUnknownActive
			if err := e.record(ctx, e.event(ActionBlocked, id, audit.Success, "reason", res.Reason)); err != nil {
				return e.cut(res, err)
			}
		} else {
			res.Reason = ReasonNoActiveKey
		}
		return res, nil
	}
	now := e.now()
	// The key's age first: the last rotation is read only for a user whose key is due.
	if !decideRotation(pol, current.CreatedAt, nil, opts.Force, e.backoff, now).due(now) {
		return adoptAlone(res)
	}
	last, err := e.lastFinished(ctx, id)
	if err != nil {
		return fail("%v", err)
	}
	d := decideRotation(pol, current.CreatedAt, last, opts.Force, e.backoff, now)
	if !d.due(now) {
		res.Reason = d.Reason
		return adoptAlone(res)
	}
	return e.rotate(ctx, pol, id, current, adopt, d.Attempt, keys, versions, res, opts)
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

// retire deactivates and deletes the old keys that are due. done is true when the visit ends here.
func (e *Engine) retire(ctx context.Context, pol Policy, id vault.Identity, versions []vault.Version, res *Result) (Result, bool, error) {
	current := currentVersion(versions)
	now := e.now()
	for _, v := range versions {
		switch {
		case v.State == vault.StatePrevious && current != nil && now.Before(current.CurrentAt.Add(pol.DeactivateAfter)):
			if at := current.CurrentAt.Add(pol.DeactivateAfter); e.NoticeLead > 0 && !now.Before(at.Add(-e.NoticeLead)) {
				if err := e.upcoming(ctx, id, v.AccessKeyID, at); err != nil {
					r, err := e.cut(*res, err)
					return r, true, err
				}
			}
		case v.State == vault.StatePrevious && current != nil:
			lu, err := e.Cloud.AccessKeyLastUsed(ctx, id.AccountID, v.AccessKeyID)
			if err != nil {
				r, err := e.cut(*res, fmt.Errorf("last use of %s: %w", v.AccessKeyID, err))
				return r, true, err
			}
			if pol.stillInUse(lu.At, current.CurrentAt, now) {
				res.Outcome = Held
				res.Reason = fmt.Sprintf("old key %s still in use since %s", v.AccessKeyID, lu.At.Format(time.RFC3339))
				if err := e.record(ctx, e.event(ActionHeld, id, audit.Success, "access_key_id", v.AccessKeyID,
					"last_used", lu.At.Format(time.RFC3339))); err != nil {
					r, err := e.cut(*res, err)
					return r, true, err
				}
				continue
			}
			if err := e.crashAt("deactivate"); err != nil {
				return *res, true, err
			}
			if err := e.Cloud.SetAccessKeyStatus(ctx, id.AccountID, id.UserName, v.AccessKeyID, cloud.KeyInactive); err != nil {
				r, err := e.cut(*res, fmt.Errorf("deactivate %s: %w", v.AccessKeyID, err))
				return r, true, err
			}
			if err := e.crashAt("deactivated"); err != nil {
				return *res, true, err
			}
			if err := e.recorded(ctx, func(ctx context.Context) error { return e.Vault.Deactivate(ctx, id, v.Number) },
				e.event(ActionDeactivated, id, audit.Success, "access_key_id", v.AccessKeyID)); err != nil {
				r, err := e.cut(*res, err)
				return r, true, err
			}
			res.did(KindDeactivated, v.AccessKeyID)
			if res.Outcome == Skipped {
				res.Outcome = Deactivated
			}
		case v.State == vault.StateInactive && !now.Before(v.InactiveAt.Add(pol.DeleteAfter)):
			if err := e.crashAt("delete"); err != nil {
				return *res, true, err
			}
			if err := e.Cloud.DeleteAccessKey(ctx, id.AccountID, id.UserName, v.AccessKeyID); err != nil && !errors.Is(err, cloud.ErrNoSuchEntity) {
				r, err := e.cut(*res, fmt.Errorf("delete %s: %w", v.AccessKeyID, err))
				return r, true, err
			}
			if err := e.crashAt("deleted"); err != nil {
				return *res, true, err
			}
			if err := e.recorded(ctx, func(ctx context.Context) error { return e.Vault.Destroy(ctx, id, v.Number) },
				e.event(ActionDeleted, id, audit.Success, "access_key_id", v.AccessKeyID)); err != nil {
				r, err := e.cut(*res, err)
				return r, true, err
			}
			res.did(KindDeleted, v.AccessKeyID)
			if res.Outcome == Skipped || res.Outcome == Deactivated {
				res.Outcome = Deleted
			}
		}
	}
	return *res, false, nil
}

// rotate makes room for a new key and starts a rotation; attempt counts consecutive tries. A key to
// adopt (the user's first rotation) is recorded in the same transaction as the rotation's start.
func (e *Engine) rotate(ctx context.Context, pol Policy, id vault.Identity, current *vault.Version, adopt *cloud.AccessKey, attempt int, keys []cloud.AccessKey, versions []vault.Version, res Result, opts VisitOptions) (Result, error) {
	if len(keys) >= 2 {
		room := pol.roomFor(keys, keyStates(versions), e.now())
		if room == nil {
			res.Outcome = Blocked
			res.Reason = ReasonNoRoom
			if keys[0].Status == cloud.KeyActive && keys[1].Status == cloud.KeyActive {
				res.Reason = ReasonNoRoomActive
			}
			if err := e.record(ctx, e.event(ActionBlocked, id, audit.Success, "reason", res.Reason)); err != nil {
				return e.cut(res, err)
			}
			return e.adopt(ctx, id, adopt, res)
		}
		if err := e.Cloud.DeleteAccessKey(ctx, id.AccountID, id.UserName, room.ID); err != nil && !errors.Is(err, cloud.ErrNoSuchEntity) {
			return e.cut(res, fmt.Errorf("delete %s to make room: %w", room.ID, err))
		}
		err := e.recorded(ctx, func(ctx context.Context) error {
			for _, v := range versions {
				if v.AccessKeyID == room.ID {
					return e.Vault.Destroy(ctx, id, v.Number)
				}
			}
			return nil // a foreign key, deleted under a rule: the vault never held it
		}, e.event(ActionDeleted, id, audit.Success, "access_key_id", room.ID, "reason", "to make room for a new key"))
		if err != nil {
			return e.cut(res, err)
		}
		res.did(KindDeleted, room.ID)
	}
	now := e.now()
	var rec Record
	err := e.Store.Atomically(ctx, func(ctx context.Context) error {
		var events []step
		if adopt != nil {
			if _, err := e.Vault.Adopt(ctx, id, adopt.ID, adopt.CreatedAt); err != nil {
				return err
			}
			events = append(events, e.event(ActionAdopted, id, audit.Success, "access_key_id", adopt.ID))
		}
		var err error
		rec, err = e.Store.Begin(ctx, Record{Identity: id, Step: StepCreate, Phase: PhaseStarted, OldKeyID: current.AccessKeyID,
			Attempt: attempt, StartedAt: now, StepAt: now}, e.Owner, e.lease())
		if err != nil {
			return err
		}
		return e.record(ctx, append(events, e.event(ActionStarted, id, audit.Success, "old_key_id", current.AccessKeyID,
			"rotation", fmt.Sprint(rec.ID), "attempt", fmt.Sprint(attempt)))...)
	})
	if err == nil && adopt != nil {
		res.Actions = append([]Action{{Kind: KindAdopted, KeyID: adopt.ID}}, res.Actions...)
	}
	if err == nil {
		opts.begun(rec)
	}
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
	return e.run(ctx, pol, rec, res, false)
}

// save records the rotation's progress durably.
func (e *Engine) save(ctx context.Context, rec *Record, step Step, phase Phase) error {
	rec.Step, rec.Phase, rec.StepAt = step, phase, e.now()
	return e.Store.Save(ctx, *rec, e.Owner, e.lease())
}

// run drives an open rotation from its recorded step to the end. resumed says the rotation was
// found open (interrupted, or taken over), so its create step may have left something to settle.
func (e *Engine) run(ctx context.Context, pol Policy, rec Record, res Result, resumed bool) (Result, error) {
	id := rec.Identity
	for {
		switch {
		case rec.Step == StepCreate && rec.Phase == PhaseStarted:
			if resumed {
				if err := e.resumeCreate(ctx, &rec, &res); err != nil {
					return e.cut(res, err)
				}
			}
			if rec.NewKeyID != "" { // the key was created and stored before an interruption
				if err := e.save(ctx, &rec, StepVerify, PhaseStarted); err != nil {
					return e.cut(res, err)
				}
				continue
			}
			if err := e.crashAt("create"); err != nil {
				return res, err
			}
			nk, err := e.Cloud.CreateAccessKey(ctx, id.AccountID, id.UserName)
			if err != nil {
				return e.finishFailed(ctx, &rec, res, fmt.Sprintf("create access key: %v", err), nil)
			}
			if err := e.crashAt("created"); err != nil {
				return res, err
			}
			// Rule 1: the secret goes into the vault before anything else happens — in the same
			// transaction as the record that the create step is done and verification starts.
			next, err := e.stored(ctx, rec, nk)
			if err != nil {
				return e.cut(res, err)
			}
			rec = next
			res.did(KindCreated, nk.ID)
		case rec.Step == StepVerify || rec.Step == StepPromote:
			if rec.Step == StepVerify {
				if err := e.crashAt("verify"); err != nil {
					return res, err
				}
				if err := e.verify(ctx, pol, rec); err != nil {
					return e.rollBack(ctx, &rec, res, fmt.Sprintf("verification failed: %v", err))
				}
				res.did(KindVerified, rec.NewKeyID)
			}
			if err := e.crashAt("promote"); err != nil {
				return res, err
			}
			// Promotion is local and atomic: it is recorded in the transaction that makes it, with the finish.
			err := e.Store.Atomically(ctx, func(ctx context.Context) error {
				if resumed {
					versions, err := e.Vault.VersionsOf(ctx, id)
					if err != nil {
						return err
					}
					if stateOf(versions, rec.Version) != vault.StatePending { // promoted before an interruption
						return e.finish(ctx, rec)
					}
				}
				if err := e.Vault.Promote(ctx, id, rec.Version); err != nil {
					return err
				}
				if err := e.crashAt("promoted"); err != nil {
					return err
				}
				return e.finish(ctx, rec)
			})
			if err != nil {
				return e.cut(res, err)
			}
			res.did(KindPromoted, rec.NewKeyID)
			e.observe(OutcomeRotated, rec)
			res.Outcome = Rotated
			e.Log.Info("key rotated", "identity", id.String(), "old_key_id", rec.OldKeyID, "new_key_id", rec.NewKeyID)
			return res, nil
		default:
			return e.cut(res, fmt.Errorf("rotation %d in unknown state %s/%s", rec.ID, rec.Step, rec.Phase))
		}
	}
}

// stored writes a new key's secret and the record that verification starts in one transaction. If
// the record cannot be written (the lease was lost), the secret is still stored alone, as pending:
// whoever holds the rotation then takes it up, so the key never goes unaccounted for.
func (e *Engine) stored(ctx context.Context, rec Record, nk cloud.NewAccessKey) (Record, error) {
	id := rec.Identity
	// The data key is made first, outside the transaction: the KEK may be AWS KMS.
	p, err := e.Vault.Prepare(ctx, id, nk.ID, nk.Secret)
	if err != nil {
		return rec, fmt.Errorf("store new key %s: %w", nk.ID, err)
	}
	defer p.Clear()
	sealed := false
	err = e.Store.Atomically(ctx, func(ctx context.Context) error {
		ver, err := e.Vault.AddPendingPrepared(ctx, p)
		if err != nil {
			return fmt.Errorf("store new key %s: %w", nk.ID, err)
		}
		sealed = true
		if err := e.crashAt("stored"); err != nil {
			return err
		}
		rec.NewKeyID, rec.Version = nk.ID, ver.Number
		if err := e.save(ctx, &rec, StepVerify, PhaseStarted); err != nil {
			return err
		}
		return e.record(ctx, e.event(ActionCreated, id, audit.Success, "access_key_id", nk.ID,
			"version", fmt.Sprint(ver.Number), "rotation", fmt.Sprint(rec.ID)))
	})
	if err != nil && sealed && !errors.Is(err, ErrCrashed) {
		if _, err2 := e.Vault.AddPendingPrepared(ctx, p); err2 != nil {
			return rec, fmt.Errorf("%w; and storing new key %s alone failed: %v", err, nk.ID, err2)
		}
	}
	return rec, err
}

func (e *Engine) observe(outcome string, rec Record) {
	if e.Observe != nil {
		e.Observe(outcome, e.now().Sub(rec.StartedAt))
	}
}

// finish records a rotation as done.
func (e *Engine) finish(ctx context.Context, rec Record) error {
	rec.Outcome, rec.FinishedAt = OutcomeRotated, e.now()
	if err := e.save(ctx, &rec, StepFinished, PhaseDone); err != nil {
		return err
	}
	return e.record(ctx, e.event(ActionRotated, rec.Identity, audit.Success, "old_key_id", rec.OldKeyID,
		"new_key_id", rec.NewKeyID, "version", fmt.Sprint(rec.Version), "rotation", fmt.Sprint(rec.ID)))
}

// resumeCreate settles a create step that was interrupted: a key stored as pending since the rotation
// began is taken up; a key in the cloud that the vault does not hold, created since the rotation
// began, is the orphan of a crash between CreateAccessKey and the vault, and is deleted.
func (e *Engine) resumeCreate(ctx context.Context, rec *Record, res *Result) error {
	id := rec.Identity
	versions, err := e.Vault.VersionsOf(ctx, id)
	if err != nil {
		return err
	}
	known := map[string]bool{}
	for _, v := range versions {
		known[v.AccessKeyID] = true
		if v.State == vault.StatePending && !v.CreatedAt.Before(rec.StartedAt) {
			rec.NewKeyID, rec.Version = v.AccessKeyID, v.Number
		}
	}
	if rec.NewKeyID != "" {
		return nil
	}
	keys, err := e.Cloud.ListAccessKeys(ctx, id.AccountID, id.UserName)
	if err != nil {
		return fmt.Errorf("list keys: %w", err)
	}
	// Cloud and Keyward clocks may differ a little: allow a minute before the record began.
	since := rec.StartedAt.Add(-time.Minute)
	for _, k := range keys {
		if known[k.ID] || k.ID == rec.OldKeyID || k.CreatedAt.Before(since) {
			continue
		}
		if err := e.Cloud.DeleteAccessKey(ctx, id.AccountID, id.UserName, k.ID); err != nil && !errors.Is(err, cloud.ErrNoSuchEntity) {
			return fmt.Errorf("delete orphaned key %s: %w", k.ID, err)
		}
		res.did(KindDeletedOrphan, k.ID)
		if err := e.record(ctx, e.event(ActionDeleted, id, audit.Success, "access_key_id", k.ID,
			"reason", "created by an interrupted rotation before its secret reached the vault", "rotation", fmt.Sprint(rec.ID))); err != nil {
			return err
		}
		e.Log.Warn("deleted a key whose secret never reached the vault", "identity", id.String(), "access_key_id", k.ID, "rotation", rec.ID)
	}
	return nil
}

// verify signs with the new key until the cloud accepts it three times in a row.
func (e *Engine) verify(ctx context.Context, pol Policy, rec Record) error {
	cred, err := e.Vault.Reveal(ctx, rec.Identity, rec.Version)
	if err != nil {
		return err
	}
	deadline := e.now().Add(pol.VerifyTimeout)
	successes, refusals := 0, 0
	var last error
	for {
		arn, err := e.Cloud.Verify(ctx, rec.Identity.AccountID, rec.NewKeyID, cred.SecretAccessKey)
		switch {
		case err == nil && arnUser(arn) == rec.Identity.UserName:
			successes, refusals = successes+1, 0
			if successes == 3 {
				return nil
			}
		case err == nil:
			return fmt.Errorf("the key signs as %s, not as user %s", arn, rec.Identity.UserName)
		default:
			successes, refusals, last = 0, refusals+1, err
		}
		// The pause doubles with each refusal in a row (a new key takes seconds to work everywhere).
		pause := backoff.Exponential(e.VerifyInterval, 16*e.VerifyInterval, refusals+1)
		if !e.now().Add(pause).Before(deadline) {
			if last == nil {
				last = errors.New("not accepted three times in a row")
			}
			return fmt.Errorf("not verified within %s: %w", pol.VerifyTimeout, last)
		}
		if err := e.Sleep(ctx, pause); err != nil {
			return err
		}
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

// rollBack deletes a new key that failed verification and destroys its version; the old key is
// untouched, and the rotation is recorded as failed so later passes retry with backoff.
func (e *Engine) rollBack(ctx context.Context, rec *Record, res Result, reason string) (Result, error) {
	id := rec.Identity
	if err := e.Cloud.DeleteAccessKey(ctx, id.AccountID, id.UserName, rec.NewKeyID); err != nil && !errors.Is(err, cloud.ErrNoSuchEntity) {
		return e.cut(res, fmt.Errorf("%s; and deleting the new key %s failed: %w", reason, rec.NewKeyID, err))
	}
	res.did(KindRolledBack, rec.NewKeyID)
	return e.finishFailed(ctx, rec, res, reason, func(ctx context.Context) error {
		if err := e.Vault.Destroy(ctx, id, rec.Version); err != nil && !errors.Is(err, vault.ErrInvalidTransition) {
			return err
		}
		return nil
	})
}

// finishFailed records a rotation as failed, after undo (if not nil) in the same transaction.
func (e *Engine) finishFailed(ctx context.Context, rec *Record, res Result, reason string, undo func(ctx context.Context) error) (Result, error) {
	rec.Outcome, rec.Reason, rec.FinishedAt = OutcomeFailed, reason, e.now()
	err := e.Store.Atomically(ctx, func(ctx context.Context) error {
		if undo != nil {
			if err := undo(ctx); err != nil {
				return err
			}
		}
		if err := e.save(ctx, rec, StepFinished, PhaseDone); err != nil {
			return err
		}
		return e.record(ctx, e.event(ActionFailed, rec.Identity, audit.Failure, "reason", reason,
			"old_key_id", rec.OldKeyID, "new_key_id", rec.NewKeyID, "attempt", fmt.Sprint(rec.Attempt), "rotation", fmt.Sprint(rec.ID)))
	})
	if err != nil {
		return e.cut(res, err)
	}
	e.observe(OutcomeFailed, *rec)
	e.Log.Warn("rotation failed", "identity", rec.Identity.String(), "attempt", rec.Attempt, "reason", reason)
	res.Outcome, res.Reason = Failed, reason
	return res, nil
}
