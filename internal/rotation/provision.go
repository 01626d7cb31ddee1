package rotation

import (
	"context"
	"errors"
	"fmt"

	"github.com/keyward/keyward/internal/cloud"
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

	// leaks are the open leaks, read once by a pass for all its visits (nil: the visit reads them).
	leaks map[string]Leak
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
	v := e.newVisit(u, opts)
	// An open rotation (a first provisioning interrupted, say) is finished first, as a visit would.
	if _, open, err := v.e.Store.Open(ctx, v.id); err != nil {
		return v.res, err
	} else if open {
		return e.Visit(ctx, u, VisitOptions{OnBegin: opts.OnBegin})
	}
	ks, err := v.reconcile(ctx)
	if err != nil {
		return v.res, err
	}
	if err := foreignKey(ks); err != nil {
		return v.res, err
	}
	if currentVersion(ks.versions) != nil {
		return v.res, nil
	}
	pol, exempt, err := v.e.policyFor(ctx, u)
	if err != nil {
		return v.res, err
	}
	if exempt {
		return v.res, fmt.Errorf("%s is %w", v.id, ErrExempt)
	}
	v.pol = pol
	rec, err := v.begin(ctx, nil, Record{Identity: v.id, Step: StepCreate, Phase: PhaseStarted, Attempt: 1}, "reason", "first key")
	switch {
	case errors.Is(err, ErrBusy), errors.Is(err, ErrStale):
		v.res.Reason = "provisioned meanwhile by another process"
		return v.res, nil
	case err != nil:
		return v.res, err
	}
	opts.begun(rec)
	return v.result(v.drive(ctx, rec, false))
}

// foreignKey says why a user cannot be given its first key by Keyward (ErrHasForeignKey): an active
// key whose secret Keyward does not hold, or two inactive keys.
func foreignKey(ks keyState) error {
	if current := currentVersion(ks.versions); current != nil {
		if !current.HasSecret {
			return fmt.Errorf("%s: %w (%s): import it with keyward vault import", ks.id, ErrHasForeignKey, current.AccessKeyID)
		}
		return nil
	}
	if ks.adopt != nil || len(activeKeys(ks.keys)) > 0 {
		return fmt.Errorf("%s: %w: import its secret with keyward vault import, or delete the key", ks.id, ErrHasForeignKey)
	}
	if len(ks.keys) >= 2 {
		return fmt.Errorf("%s: %w: it holds two inactive keys", ks.id, ErrHasForeignKey)
	}
	return nil
}
