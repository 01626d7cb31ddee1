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
	"sync"
	"time"

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
	// Denied: the user is outside Keyward's permissions (a call about it was refused); it is
	// reported with the action that was refused, and the pass goes on.
	Denied Outcome = "denied"
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
	// Interrupted: the visit failed on an error that passes (Engine.Transient: the database away),
	// not on the user's own trouble; the scheduler comes back soon instead of an interval later.
	Interrupted bool `json:"interrupted,omitempty"`
}

func (r *Result) did(kind ActionKind, keyID string) {
	r.Actions = append(r.Actions, Action{Kind: kind, KeyID: keyID})
}

// done reports whether the visit did kind to the key.
func (r Result) done(kind ActionKind, keyID string) bool {
	for _, a := range r.Actions {
		if a.Kind == kind && a.KeyID == keyID {
			return true
		}
	}
	return false
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
	// Transient, when set, says whether an error that failed a visit passes by itself (the database
	// unavailable or too slow): such a visit is Interrupted, and its pass is tried again soon.
	Transient func(error) bool
	// PassRetry is the wait after a pass cut short by an error or unable to list an account, doubled
	// per such pass in a row up to the schedule's interval (default 5 s).
	PassRetry time.Duration
	// RetryBackoff is the wait after a failed rotation, doubled per consecutive failure (default 10 minutes, at most 24 h).
	RetryBackoff time.Duration
	// Delivery, when set, puts every new key into its identity's targets before it is promoted.
	Delivery *Delivery
	// Leaks, when set, records reported leaks; visits act on the open ones (see leak.go).
	Leaks LeakStore

	// owners are the visited user's owners, in the copy of the engine a visit runs on (forUser).
	owners []string
	// denied remembers the users found outside Keyward's permissions, so that each is logged once
	// (identity|action → true), not at every pass.
	denied *sync.Map

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
	e.denied = &sync.Map{}
	if e.VerifyInterval == 0 {
		e.VerifyInterval = time.Second
	}
	if e.PassRetry == 0 {
		e.PassRetry = 5 * time.Second
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

// reportDenied logs, once per process, a user found outside Keyward's permissions; status, the
// inventory and the report say it at every look.
func (e *Engine) reportDenied(id vault.Identity, action string) {
	if e.denied == nil {
		return
	}
	if _, seen := e.denied.LoadOrStore(id.String()+"|"+action, true); !seen {
		e.Log.Warn("a user is outside Keyward's permissions: it is reported, not managed", "identity", id.String(), "refused", action)
	}
}
