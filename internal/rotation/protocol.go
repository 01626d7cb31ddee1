package rotation

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/backoff"
	"github.com/keyward/keyward/internal/cloud"
	"github.com/keyward/keyward/internal/vault"
)

// rotation is one open rotation driven through the protocol's steps, each a method named after it:
// create (and settleCreate after an interruption), verify, promote, and rollBack when verification
// fails. The steps record their progress in rec and what they did in res; drive returns res once.
type rotation struct {
	e       *Engine
	pol     Policy
	rec     Record
	res     Result
	resumed bool // found open (interrupted, or taken over): its create step may have left something to settle
}

// drive runs an open rotation from its recorded step to the end.
func (e *Engine) drive(ctx context.Context, pol Policy, rec Record, res Result, resumed bool) (Result, error) {
	r := &rotation{e: e, pol: pol, rec: rec, res: res, resumed: resumed}
	err := r.steps(ctx)
	if err != nil {
		return e.cut(r.res, err)
	}
	return r.res, nil
}

// steps runs the steps from the recorded one: create, then verify, then promote.
func (r *rotation) steps(ctx context.Context) error {
	for {
		switch {
		case r.rec.Step == StepCreate && r.rec.Phase == PhaseStarted:
			done, err := r.create(ctx)
			if err != nil || done {
				return err
			}
		case r.rec.Step == StepVerify:
			if err := r.e.crashAt("verify"); err != nil {
				return err
			}
			if err := r.verify(ctx); err != nil {
				return r.rollBack(ctx, fmt.Sprintf("verification failed: %v", err))
			}
			r.res.did(KindVerified, r.rec.NewKeyID)
			return r.promote(ctx)
		case r.rec.Step == StepPromote:
			return r.promote(ctx)
		default:
			return fmt.Errorf("rotation %d in unknown state %s/%s", r.rec.ID, r.rec.Step, r.rec.Phase)
		}
	}
}

// save records the rotation's progress durably.
func (r *rotation) save(ctx context.Context, step Step, phase Phase) error {
	r.rec.Step, r.rec.Phase, r.rec.StepAt = step, phase, r.e.now()
	return r.e.Store.Save(ctx, r.rec, r.e.Owner, r.e.lease())
}

// create makes the new key and stores its secret (rule 1: before anything else happens), or takes
// up what an interrupted create left. done is true when the rotation ended here (it failed).
func (r *rotation) create(ctx context.Context) (done bool, err error) {
	if r.resumed {
		if err := r.settleCreate(ctx); err != nil {
			return true, err
		}
	}
	if r.rec.NewKeyID != "" { // the key was created and stored before an interruption
		return false, r.save(ctx, StepVerify, PhaseStarted)
	}
	if err := r.e.crashAt("create"); err != nil {
		return true, err
	}
	id := r.rec.Identity
	nk, err := r.e.Cloud.CreateAccessKey(ctx, id.AccountID, id.UserName)
	if err != nil {
		return true, r.failed(ctx, fmt.Sprintf("create access key: %v", err), nil)
	}
	if err := r.e.crashAt("created"); err != nil {
		return true, err
	}
	if err := r.store(ctx, nk); err != nil {
		return true, err
	}
	r.res.did(KindCreated, nk.ID)
	return false, nil
}

// store writes a new key's secret and the record that verification starts in one transaction. If
// the record cannot be written (the lease was lost), the secret is still stored alone, as pending:
// whoever holds the rotation then takes it up, so the key never goes unaccounted for.
func (r *rotation) store(ctx context.Context, nk cloud.NewAccessKey) error {
	id := r.rec.Identity
	// The data key is made first, outside the transaction: the KEK may be AWS KMS.
	p, err := r.e.Vault.Prepare(ctx, id, nk.ID, nk.Secret)
	if err != nil {
		return fmt.Errorf("store new key %s: %w", nk.ID, err)
	}
	defer p.Clear()
	sealed := false
	next := r.rec
	err = r.e.Store.Atomically(ctx, func(ctx context.Context) error {
		ver, err := r.e.Vault.AddPendingPrepared(ctx, p)
		if err != nil {
			return fmt.Errorf("store new key %s: %w", nk.ID, err)
		}
		sealed = true
		if err := r.e.crashAt("stored"); err != nil {
			return err
		}
		next.NewKeyID, next.Version = nk.ID, ver.Number
		next.Step, next.Phase, next.StepAt = StepVerify, PhaseStarted, r.e.now()
		if err := r.e.Store.Save(ctx, next, r.e.Owner, r.e.lease()); err != nil {
			return err
		}
		return r.e.record(ctx, r.e.event(ActionCreated, id, audit.Success, "access_key_id", nk.ID,
			"version", fmt.Sprint(ver.Number), "rotation", fmt.Sprint(r.rec.ID)))
	})
	if err != nil && sealed && !errors.Is(err, ErrCrashed) {
		if _, err2 := r.e.Vault.AddPendingPrepared(ctx, p); err2 != nil {
			return fmt.Errorf("%w; and storing new key %s alone failed: %v", err, nk.ID, err2)
		}
	}
	if err == nil {
		r.rec = next
	}
	return err
}

// settleCreate settles a create step that was interrupted: a key stored as pending since the
// rotation began is taken up; a key in the cloud that the vault does not hold, created since the
// rotation began, is the orphan of a crash between CreateAccessKey and the vault, and is deleted.
func (r *rotation) settleCreate(ctx context.Context) error {
	id := r.rec.Identity
	versions, err := r.e.Vault.VersionsOf(ctx, id)
	if err != nil {
		return err
	}
	known := map[string]bool{}
	for _, v := range versions {
		known[v.AccessKeyID] = true
		if v.State == vault.StatePending && !v.CreatedAt.Before(r.rec.StartedAt) {
			r.rec.NewKeyID, r.rec.Version = v.AccessKeyID, v.Number
		}
	}
	if r.rec.NewKeyID != "" {
		return nil
	}
	keys, err := r.e.Cloud.ListAccessKeys(ctx, id.AccountID, id.UserName)
	if err != nil {
		return fmt.Errorf("list keys: %w", err)
	}
	// Cloud and Keyward clocks may differ a little: allow a minute before the record began.
	since := r.rec.StartedAt.Add(-time.Minute)
	for _, k := range keys {
		if known[k.ID] || k.ID == r.rec.OldKeyID || k.CreatedAt.Before(since) {
			continue
		}
		if err := r.e.Cloud.DeleteAccessKey(ctx, id.AccountID, id.UserName, k.ID); err != nil && !errors.Is(err, cloud.ErrNoSuchEntity) {
			return fmt.Errorf("delete orphaned key %s: %w", k.ID, err)
		}
		r.res.did(KindDeletedOrphan, k.ID)
		if err := r.e.record(ctx, r.e.event(ActionDeleted, id, audit.Success, "access_key_id", k.ID,
			"reason", "created by an interrupted rotation before its secret reached the vault", "rotation", fmt.Sprint(r.rec.ID))); err != nil {
			return err
		}
		r.e.Log.Warn("deleted a key whose secret never reached the vault", "identity", id.String(), "access_key_id", k.ID, "rotation", r.rec.ID)
	}
	return nil
}

// verify signs with the new key until the cloud accepts it three times in a row.
func (r *rotation) verify(ctx context.Context) error {
	rec, e := r.rec, r.e
	cred, err := e.Vault.Reveal(ctx, rec.Identity, rec.Version)
	if err != nil {
		return err
	}
	deadline := e.now().Add(r.pol.VerifyTimeout)
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
			return fmt.Errorf("not verified within %s: %w", r.pol.VerifyTimeout, last)
		}
		if err := e.Sleep(ctx, pause); err != nil {
			return err
		}
	}
}

// promote makes the new key current and the old one previous, and finishes the rotation, in one
// transaction: local and atomic, recorded in the transaction that makes it.
func (r *rotation) promote(ctx context.Context) error {
	if err := r.e.crashAt("promote"); err != nil {
		return err
	}
	id := r.rec.Identity
	err := r.e.Store.Atomically(ctx, func(ctx context.Context) error {
		if r.resumed {
			versions, err := r.e.Vault.VersionsOf(ctx, id)
			if err != nil {
				return err
			}
			if stateOf(versions, r.rec.Version) != vault.StatePending { // promoted before an interruption
				return r.finish(ctx)
			}
		}
		if err := r.e.Vault.Promote(ctx, id, r.rec.Version); err != nil {
			return err
		}
		if err := r.e.crashAt("promoted"); err != nil {
			return err
		}
		return r.finish(ctx)
	})
	if err != nil {
		return err
	}
	r.res.did(KindPromoted, r.rec.NewKeyID)
	r.e.observe(OutcomeRotated, r.rec)
	r.res.Outcome = Rotated
	r.e.Log.Info("key rotated", "identity", id.String(), "old_key_id", r.rec.OldKeyID, "new_key_id", r.rec.NewKeyID)
	return nil
}

// finish records the rotation as done, in the unit of work ctx carries.
func (r *rotation) finish(ctx context.Context) error {
	rec := r.rec
	rec.Outcome, rec.FinishedAt = OutcomeRotated, r.e.now()
	rec.Step, rec.Phase, rec.StepAt = StepFinished, PhaseDone, r.e.now()
	if err := r.e.Store.Save(ctx, rec, r.e.Owner, r.e.lease()); err != nil {
		return err
	}
	return r.e.record(ctx, r.e.event(ActionRotated, rec.Identity, audit.Success, "old_key_id", rec.OldKeyID,
		"new_key_id", rec.NewKeyID, "version", fmt.Sprint(rec.Version), "rotation", fmt.Sprint(rec.ID)))
}

// rollBack deletes a new key that failed verification and destroys its version; the old key is
// untouched, and the rotation is recorded as failed so later passes retry with backoff.
func (r *rotation) rollBack(ctx context.Context, reason string) error {
	id := r.rec.Identity
	if err := r.e.Cloud.DeleteAccessKey(ctx, id.AccountID, id.UserName, r.rec.NewKeyID); err != nil && !errors.Is(err, cloud.ErrNoSuchEntity) {
		return fmt.Errorf("%s; and deleting the new key %s failed: %w", reason, r.rec.NewKeyID, err)
	}
	r.res.did(KindRolledBack, r.rec.NewKeyID)
	return r.failed(ctx, reason, func(ctx context.Context) error {
		if err := r.e.Vault.Destroy(ctx, id, r.rec.Version); err != nil && !errors.Is(err, vault.ErrInvalidTransition) {
			return err
		}
		return nil
	})
}

// failed records the rotation as failed, after undo (if not nil) in the same transaction.
func (r *rotation) failed(ctx context.Context, reason string, undo func(ctx context.Context) error) error {
	r.rec.Outcome, r.rec.Reason, r.rec.FinishedAt = OutcomeFailed, reason, r.e.now()
	err := r.e.Store.Atomically(ctx, func(ctx context.Context) error {
		if undo != nil {
			if err := undo(ctx); err != nil {
				return err
			}
		}
		if err := r.save(ctx, StepFinished, PhaseDone); err != nil {
			return err
		}
		return r.e.record(ctx, r.e.event(ActionFailed, r.rec.Identity, audit.Failure, "reason", reason,
			"old_key_id", r.rec.OldKeyID, "new_key_id", r.rec.NewKeyID, "attempt", fmt.Sprint(r.rec.Attempt), "rotation", fmt.Sprint(r.rec.ID)))
	})
	if err != nil {
		return err
	}
	r.e.observe(OutcomeFailed, r.rec)
	r.e.Log.Warn("rotation failed", "identity", r.rec.Identity.String(), "attempt", r.rec.Attempt, "reason", reason)
	r.res.Outcome, r.res.Reason = Failed, reason
	return nil
}
