package rotation

import (
	"context"
	"errors"
	"fmt"

	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/cloud"
	"github.com/keyward/keyward/internal/vault"
)

// VisitOptions say how a visit goes beyond what the policy decides.
type VisitOptions struct {
	// Force rotates whatever the key's age (and past a failure's backoff).
	Force bool
	// OnBegin, when set, is called with the record of the rotation the visit begins — as soon as its
	// beginning is durable, before the cloud is called — or of the rotation already open for the
	// user that the visit resumes or finds running elsewhere: callers that start a rotation and
	// return at once (the API's POST /rotate) learn its id.
	OnBegin func(Record)
}

func (o VisitOptions) begun(rec Record) {
	if o.OnBegin != nil {
		o.OnBegin(rec)
	}
}

// ErrHasForeignKey: the user already holds an active key that the vault has no secret for, so
// Keyward cannot hand one out; import that key's secret, or delete the key, first.
var ErrHasForeignKey = errors.New("the IAM user holds an active key whose secret Keyward does not have")

// ErrExempt: the policy exempts the user, so Keyward does not create its keys.
var ErrExempt = errors.New("exempt from rotation: Keyward does not create its keys")

// Provision gives a user that has no key yet its first one, through the same steps and records as
// a rotation (begin, create, seal, verify, promote; the crash rules hold) with no old key. A user
// that has a current key already is left alone; one whose active key Keyward does not hold is
// ErrHasForeignKey. Whether a key was made or not, the user's current version is returned.
func (e *Engine) Provision(ctx context.Context, u cloud.User, opts VisitOptions) (Result, error) {
	id := vault.Identity{Cloud: vault.CloudAWS, AccountID: u.AccountID, UserName: u.Name}
	res := Result{Identity: id, Outcome: Skipped}
	e = e.forUser(u)
	// An open rotation (a first provisioning interrupted, say) is finished first, as a visit would.
	if _, open, err := e.Store.Open(ctx, id); err != nil {
		return res, err
	} else if open {
		return e.Visit(ctx, u, VisitOptions{OnBegin: opts.OnBegin})
	}
	keys, versions, adopt, err := e.reconcile(ctx, id)
	if err != nil {
		return res, err
	}
	if current := currentVersion(versions); current != nil {
		if !current.HasSecret {
			return res, fmt.Errorf("%s: %w (%s): import it with keyward vault import", id, ErrHasForeignKey, current.AccessKeyID)
		}
		return res, nil
	}
	if adopt != nil || len(activeKeys(keys)) > 0 {
		return res, fmt.Errorf("%s: %w: import its secret with keyward vault import, or delete the key", id, ErrHasForeignKey)
	}
	if len(keys) >= 2 {
		return res, fmt.Errorf("%s: %w: it holds two inactive keys", id, ErrHasForeignKey)
	}
	pol, exempt, err := e.policyFor(ctx, u)
	if err != nil {
		return res, err
	}
	if exempt {
		return res, fmt.Errorf("%s is %w", id, ErrExempt)
	}
	now := e.now()
	var rec Record
	err = e.Store.Atomically(ctx, func(ctx context.Context) error {
		var err error
		rec, err = e.Store.Begin(ctx, Record{Identity: id, Step: StepCreate, Phase: PhaseStarted, Attempt: 1,
			StartedAt: now, StepAt: now}, e.Owner, e.lease())
		if err != nil {
			return err
		}
		return e.record(ctx, e.event(ActionStarted, id, audit.Success, "rotation", fmt.Sprint(rec.ID), "reason", "first key"))
	})
	switch {
	case errors.Is(err, ErrBusy), errors.Is(err, ErrStale):
		res.Reason = "provisioned meanwhile by another process"
		return res, nil
	case err != nil:
		return res, err
	}
	opts.begun(rec)
	return e.drive(ctx, pol, rec, res, false)
}
