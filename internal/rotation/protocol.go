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

// drive runs an open rotation from its recorded step to the end: the protocol's steps that follow
// begin, each a method of the visit named after it.
func (v *visit) drive(ctx context.Context, rec Record, resumed bool) error {
	v.rec, v.resumed = rec, resumed
	_, v.urgent = v.leaks[rec.OldKeyID]
	return v.steps(ctx)
}

// steps runs the steps from the recorded one: create, then verify, then deliver (for an identity
// with delivery targets), then promote.
func (v *visit) steps(ctx context.Context) error {
	for {
		switch {
		case v.rec.Step == StepCreate && v.rec.Phase == PhaseStarted:
			done, err := v.create(ctx)
			if err != nil || done {
				return err
			}
		case v.rec.Step == StepVerify:
			if err := v.e.crashAt("verify"); err != nil {
				return err
			}
			if err := v.verify(ctx); err != nil {
				return v.rollBack(ctx, fmt.Sprintf("verification failed: %v", err))
			}
			v.res.did(KindVerified, v.rec.NewKeyID)
			targets, err := v.targetsOf(ctx)
			if err != nil {
				return v.rollBack(ctx, fmt.Sprintf("delivery targets: %v", err))
			}
			if len(targets) == 0 {
				return v.promote(ctx)
			}
			if err := v.save(ctx, StepDeliver, PhaseStarted); err != nil {
				return err
			}
		case v.rec.Step == StepDeliver:
			if ok, err := v.deliver(ctx); err != nil || !ok {
				return err
			}
			return v.promote(ctx)
		case v.rec.Step == StepPromote:
			return v.promote(ctx)
		default:
			return fmt.Errorf("rotation %d in unknown state %s/%s", v.rec.ID, v.rec.Step, v.rec.Phase)
		}
	}
}

// save records the rotation's progress durably.
func (v *visit) save(ctx context.Context, step Step, phase Phase) error {
	v.rec.Step, v.rec.Phase, v.rec.StepAt = step, phase, v.e.now()
	return v.e.Store.Save(ctx, v.rec, v.e.Owner, v.e.lease())
}

// create makes the new key and stores its secret (rule 1: before anything else happens), or takes
// up what an interrupted create left. done is true when the rotation ended here (it failed).
func (v *visit) create(ctx context.Context) (done bool, err error) {
	if v.resumed {
		if err := v.settleCreate(ctx); err != nil {
			return true, err
		}
	}
	if v.rec.NewKeyID != "" { // the key was created and stored before an interruption
		return false, v.save(ctx, StepVerify, PhaseStarted)
	}
	if err := v.e.crashAt("create"); err != nil {
		return true, err
	}
	id := v.rec.Identity
	nk, err := v.e.Cloud.CreateAccessKey(ctx, id.AccountID, id.UserName)
	if err != nil {
		// The call may have made the key though its answer was lost: such a key has no secret
		// anywhere, so it is found (made since the rotation began, unknown to the vault) and deleted
		// before the failure is recorded, rather than left to block the user.
		if serr := v.settleCreate(ctx); serr != nil {
			return true, fmt.Errorf("create access key: %v; then: %w", err, serr)
		}
		return true, v.failed(ctx, fmt.Sprintf("create access key: %v", err), nil)
	}
	if err := v.e.crashAt("created"); err != nil {
		return true, err
	}
	if err := v.store(ctx, nk); err != nil {
		return true, err
	}
	v.res.did(KindCreated, nk.ID)
	return false, nil
}

// store writes a new key's secret and the record that verification starts in one transaction. If
// the record cannot be written (the lease was lost), the secret is still stored alone, as pending:
// whoever holds the rotation then takes it up, so the key never goes unaccounted for.
func (v *visit) store(ctx context.Context, nk cloud.NewAccessKey) error {
	id := v.rec.Identity
	// The data key is made first, outside the transaction: the KEK may be AWS KMS.
	p, err := v.e.Vault.Prepare(ctx, id, nk.ID, nk.Secret)
	if err != nil {
		return fmt.Errorf("store new key %s: %w", nk.ID, err)
	}
	defer p.Clear()
	sealed := false
	next := v.rec
	err = v.e.Store.Atomically(ctx, func(ctx context.Context) error {
		ver, err := v.e.Vault.AddPendingPrepared(ctx, p)
		if err != nil {
			return fmt.Errorf("store new key %s: %w", nk.ID, err)
		}
		sealed = true
		if err := v.e.crashAt("stored"); err != nil {
			return err
		}
		next.NewKeyID, next.Version = nk.ID, ver.Number
		next.Step, next.Phase, next.StepAt = StepVerify, PhaseStarted, v.e.now()
		if err := v.e.Store.Save(ctx, next, v.e.Owner, v.e.lease()); err != nil {
			return err
		}
		return v.e.record(ctx, v.e.event(ActionCreated, id, audit.Success, "access_key_id", nk.ID,
			"version", fmt.Sprint(ver.Number), "rotation", fmt.Sprint(v.rec.ID)))
	})
	if err != nil && sealed && !errors.Is(err, ErrCrashed) {
		if _, err2 := v.e.Vault.AddPendingPrepared(ctx, p); err2 != nil {
			return fmt.Errorf("%w; and storing new key %s alone failed: %v", err, nk.ID, err2)
		}
	}
	if err == nil {
		v.rec = next
	}
	return err
}

// settleCreate settles a create step that was interrupted: a key stored as pending since the
// rotation began is taken up; a key in the cloud that the vault does not hold, created since the
// rotation began, is the orphan of a crash between CreateAccessKey and the vault, and is deleted.
func (v *visit) settleCreate(ctx context.Context) error {
	id := v.rec.Identity
	versions, err := v.e.Vault.VersionsOf(ctx, id)
	if err != nil {
		return err
	}
	known := map[string]bool{}
	for _, ver := range versions {
		known[ver.AccessKeyID] = true
		if ver.State == vault.StatePending && !ver.CreatedAt.Before(v.rec.StartedAt) {
			v.rec.NewKeyID, v.rec.Version = ver.AccessKeyID, ver.Number
		}
	}
	if v.rec.NewKeyID != "" {
		return nil
	}
	keys, err := v.e.Cloud.ListAccessKeys(ctx, id.AccountID, id.UserName)
	if err != nil {
		return fmt.Errorf("list keys: %w", err)
	}
	// Cloud and Keyward clocks may differ a little: allow a minute before the record began.
	since := v.rec.StartedAt.Add(-time.Minute)
	for _, k := range keys {
		if known[k.ID] || k.ID == v.rec.OldKeyID || k.CreatedAt.Before(since) {
			continue
		}
		if err := v.e.Cloud.DeleteAccessKey(ctx, id.AccountID, id.UserName, k.ID); err != nil && !errors.Is(err, cloud.ErrNoSuchEntity) {
			return fmt.Errorf("delete orphaned key %s: %w", k.ID, err)
		}
		v.res.did(KindDeletedOrphan, k.ID)
		if err := v.e.record(ctx, v.e.event(ActionDeleted, id, audit.Success, "access_key_id", k.ID,
			"reason", "created by an interrupted rotation before its secret reached the vault", "rotation", fmt.Sprint(v.rec.ID))); err != nil {
			return err
		}
		v.e.Log.Warn("deleted a key whose secret never reached the vault", "identity", id.String(), "access_key_id", k.ID, "rotation", v.rec.ID)
	}
	return nil
}

// verify signs with the new key until the cloud accepts it three times in a row.
func (v *visit) verify(ctx context.Context) error {
	rec, e := v.rec, v.e
	cred, err := e.Vault.Reveal(ctx, rec.Identity, rec.Version)
	if err != nil {
		return err
	}
	deadline := e.now().Add(v.pol.VerifyTimeout)
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
		// Replacing a leaked key, the three successes are asked for back to back.
		pause := backoff.Exponential(e.VerifyInterval, 16*e.VerifyInterval, refusals+1)
		if v.urgent && refusals == 0 {
			pause = 0
		}
		if !e.now().Add(pause).Before(deadline) {
			if last == nil {
				last = errors.New("not accepted three times in a row")
			}
			return fmt.Errorf("not verified within %s: %w", v.pol.VerifyTimeout, last)
		}
		if err := e.Sleep(ctx, pause); err != nil {
			return err
		}
	}
}

// promote makes the new key current and the old one previous, and finishes the rotation, in one
// transaction: local and atomic, recorded in the transaction that makes it.
func (v *visit) promote(ctx context.Context) error {
	if err := v.e.crashAt("promote"); err != nil {
		return err
	}
	id := v.rec.Identity
	err := v.e.Store.Atomically(ctx, func(ctx context.Context) error {
		if v.resumed {
			versions, err := v.e.Vault.VersionsOf(ctx, id)
			if err != nil {
				return err
			}
			if stateOf(versions, v.rec.Version) != vault.StatePending { // promoted before an interruption
				return v.finish(ctx)
			}
		}
		if err := v.e.Vault.Promote(ctx, id, v.rec.Version); err != nil {
			return err
		}
		if err := v.e.crashAt("promoted"); err != nil {
			return err
		}
		if len(v.targets) > 0 {
			if err := v.e.recordDeliveries(ctx, id, v.targets, v.rec.NewKeyID, "rotation", fmt.Sprint(v.rec.ID)); err != nil {
				return err
			}
		}
		return v.finish(ctx)
	})
	if err != nil {
		return err
	}
	v.res.did(KindPromoted, v.rec.NewKeyID)
	v.e.observe(OutcomeRotated, v.rec)
	v.res.Outcome = Rotated
	v.e.Log.Info("key rotated", "identity", id.String(), "old_key_id", v.rec.OldKeyID, "new_key_id", v.rec.NewKeyID)
	return nil
}

// finish records the rotation as done, in the unit of work ctx carries.
func (v *visit) finish(ctx context.Context) error {
	rec := v.rec
	rec.Outcome, rec.FinishedAt = OutcomeRotated, v.e.now()
	rec.Step, rec.Phase, rec.StepAt = StepFinished, PhaseDone, v.e.now()
	if err := v.e.Store.Save(ctx, rec, v.e.Owner, v.e.lease()); err != nil {
		return err
	}
	return v.e.record(ctx, v.e.event(ActionRotated, rec.Identity, audit.Success, "old_key_id", rec.OldKeyID,
		"new_key_id", rec.NewKeyID, "version", fmt.Sprint(rec.Version), "rotation", fmt.Sprint(rec.ID)))
}

// rollBack deletes a new key that failed verification and destroys its version; the old key is
// untouched, and the rotation is recorded as failed so later passes retry with backoff.
func (v *visit) rollBack(ctx context.Context, reason string) error {
	return v.rollBackAs(ctx, ActionFailed, reason)
}

// rollBackAs rolls back, recording the failure as action (rotation.failed, delivery.failed).
func (v *visit) rollBackAs(ctx context.Context, action, reason string) error {
	id := v.rec.Identity
	if err := v.e.Cloud.DeleteAccessKey(ctx, id.AccountID, id.UserName, v.rec.NewKeyID); err != nil && !errors.Is(err, cloud.ErrNoSuchEntity) {
		return fmt.Errorf("%s; and deleting the new key %s failed: %w", reason, v.rec.NewKeyID, err)
	}
	v.res.did(KindRolledBack, v.rec.NewKeyID)
	return v.failedAs(ctx, action, reason, func(ctx context.Context) error {
		if err := v.e.Vault.Destroy(ctx, id, v.rec.Version); err != nil && !errors.Is(err, vault.ErrInvalidTransition) {
			return err
		}
		return nil
	})
}

// failed records the rotation as failed, after undo (if not nil) in the same transaction.
func (v *visit) failed(ctx context.Context, reason string, undo func(ctx context.Context) error) error {
	return v.failedAs(ctx, ActionFailed, reason, undo)
}

// failedAs records the rotation as failed with the audit action given.
func (v *visit) failedAs(ctx context.Context, action, reason string, undo func(ctx context.Context) error) error {
	v.rec.Outcome, v.rec.Reason, v.rec.FinishedAt = OutcomeFailed, reason, v.e.now()
	err := v.e.Store.Atomically(ctx, func(ctx context.Context) error {
		if undo != nil {
			if err := undo(ctx); err != nil {
				return err
			}
		}
		if err := v.save(ctx, StepFinished, PhaseDone); err != nil {
			return err
		}
		return v.e.record(ctx, v.e.event(action, v.rec.Identity, audit.Failure, "reason", reason,
			"old_key_id", v.rec.OldKeyID, "new_key_id", v.rec.NewKeyID, "attempt", fmt.Sprint(v.rec.Attempt), "rotation", fmt.Sprint(v.rec.ID)))
	})
	if err != nil {
		return err
	}
	v.e.observe(OutcomeFailed, v.rec)
	v.e.Log.Warn("rotation failed", "identity", v.rec.Identity.String(), "attempt", v.rec.Attempt, "reason", reason)
	v.res.Outcome, v.res.Reason = Failed, reason
	return nil
}
