package rotation

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/cloud"
	"github.com/keyward/keyward/internal/delivery"
	"github.com/keyward/keyward/internal/vault"
)

// visit is one visit of one user, and the protocol's steps are its methods, in the order they run:
//
//	reconcile → retire (deactivate, deleteRetired) → rotateIfDue → rotate (makeRoom, begin)
//	→ create (settleCreate, store) → verify → promote (finish) | rollBack (failed)
//
// An open rotation found at the start is resumed at its recorded step (resume). The steps add what
// they did to res, and record the open rotation's progress in rec; the visit returns res once.
type visit struct {
	e       *Engine
	id      vault.Identity
	pol     Policy
	opts    VisitOptions
	res     Result
	rec     Record // the open rotation, once begun or resumed
	resumed bool   // rec was found open (interrupted, or taken over): its create step may have left something to settle
	user    cloud.User
	leaks   map[string]Leak // the open leaks: keys reported exposed
	urgent  bool            // the key being replaced is leaked: verification does not pause between successes
	// targets are the user's delivery targets, once resolved (targetsOf).
	targets      []delivery.Spec
	targetsKnown bool
}

// Visit brings one user up to date: reconcile cloud and vault, resume an open rotation, retire old
// keys that are due, and rotate when the key is due (or force). It returns an error only when the
// visit was cut short (a hook, a cancelled context); a failed rotation is a Result, not an error.
func (e *Engine) Visit(ctx context.Context, u cloud.User, opts VisitOptions) (Result, error) {
	v := e.newVisit(u, opts)
	if u.Denied != "" {
		return v.result(&cloud.DeniedError{Action: u.Denied, Doing: "list tags of " + u.Name, Err: cloud.ErrAccessDenied})
	}
	pol, exempt, err := v.e.policyFor(ctx, u)
	if err != nil {
		return v.result(err)
	}
	if exempt {
		v.res.Outcome = Exempt
		return v.res, nil
	}
	v.pol = pol
	return v.result(v.run(ctx))
}

// newVisit starts a visit of u, on a copy of the engine that knows u's owners (forUser).
func (e *Engine) newVisit(u cloud.User, opts VisitOptions) *visit {
	id := vault.Identity{Cloud: vault.CloudAWS, AccountID: u.AccountID, UserName: u.Name}
	return &visit{e: e.forUser(u), id: id, user: u, opts: opts, res: Result{Identity: id, Outcome: Skipped}}
}

// run is the visit's protocol: an open rotation first; otherwise reconcile, retire, and rotate if due.
// A leaked key replaced by this visit is retired in it too.
func (v *visit) run(ctx context.Context) error {
	leaks, err := v.e.leaksFor(ctx, v.opts)
	if err != nil {
		return err
	}
	v.leaks = leaks
	if rec, open, err := v.e.Store.Open(ctx, v.id); err != nil {
		return err
	} else if open {
		if err := v.resume(ctx, rec); err != nil {
			return err
		}
		return v.retireLeaked(ctx)
	}
	ks, err := v.reconcile(ctx)
	if err != nil {
		return err
	}
	if err := v.retire(ctx, ks.versions); err != nil {
		return err
	}
	if len(v.res.Actions) > 0 { // a key was retired: what follows works on the keys as they are now
		if ks, err = v.reconcile(ctx); err != nil {
			return err
		}
	}
	if err := v.rotateIfDue(ctx, ks); err != nil {
		return err
	}
	if err := v.retireLeaked(ctx); err != nil || v.rec.ID != 0 || v.e.Delivery == nil {
		return err
	}
	return v.catchUp(ctx)
}

// retireLeaked deactivates, in the same visit, a leaked key that the visit has just replaced.
func (v *visit) retireLeaked(ctx context.Context) error {
	if _, leaked := v.leaks[v.rec.OldKeyID]; !leaked || v.res.Outcome != Rotated {
		return nil
	}
	ks, err := v.reconcile(ctx)
	if err != nil {
		return err
	}
	return v.retire(ctx, ks.versions)
}

// result is what the visit returns: its result, or — for an error that cut it short — the error
// itself when it was a hook's crash or a cancellation, and otherwise a failure of this user only.
func (v *visit) result(err error) (Result, error) {
	if err == nil {
		return v.res, nil
	}
	if errors.Is(err, ErrCrashed) || errors.Is(err, context.Canceled) {
		return v.res, err
	}
	if action, denied := cloud.DeniedAction(err); denied {
		v.res.Outcome, v.res.Reason = Denied, OutsidePermissions(action)
		v.e.reportDenied(v.id, action)
		return v.res, nil
	}
	v.res.Outcome, v.res.Reason = Failed, err.Error()
	v.res.Interrupted = v.e.Transient != nil && v.e.Transient(err)
	return v.res, nil
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
func (v *visit) resume(ctx context.Context, rec Record) error {
	e := v.e
	err := e.Store.Resume(ctx, rec.ID, e.Owner, e.now(), e.lease(), "")
	if errors.Is(err, ErrBusy) && e.OwnerGone != nil && rec.LeaseOwner != "" && e.OwnerGone(rec.LeaseOwner) {
		e.Log.Warn("taking over the rotation of a process that is gone", "identity", rec.Identity.String(), "owner", rec.LeaseOwner)
		err = e.Store.Resume(ctx, rec.ID, e.Owner, e.now(), e.lease(), rec.LeaseOwner)
	}
	if errors.Is(err, ErrBusy) {
		v.res.Reason = "rotation in progress elsewhere"
		v.opts.begun(rec)
		return nil
	} else if err != nil {
		return err
	}
	v.opts.begun(rec)
	return v.drive(ctx, rec, true)
}

// keyState is a user's keys as the cloud and the vault hold them at one moment of a visit, and the
// one active key to adopt when the vault knows none.
type keyState struct {
	id       vault.Identity
	keys     []cloud.AccessKey
	versions []vault.Version
	adopt    *cloud.AccessKey
}

// reconcile makes the vault agree with the cloud before anything is decided: versions whose key is
// gone are destroyed, previous versions whose key is inactive are marked inactive. For a user the
// vault does not know yet, it returns the one active key to adopt, without writing it (see adopt).
func (v *visit) reconcile(ctx context.Context) (keyState, error) {
	e, id := v.e, v.id
	ks := keyState{id: id}
	keys, err := e.Cloud.ListAccessKeys(ctx, id.AccountID, id.UserName)
	if err != nil {
		return ks, fmt.Errorf("list keys: %w", err)
	}
	versions, err := e.Vault.VersionsOf(ctx, id)
	if err != nil {
		return ks, err
	}
	inCloud := map[string]cloud.AccessKey{}
	for _, k := range keys {
		inCloud[k.ID] = k
	}
	changed := false
	for _, ver := range versions {
		k, exists := inCloud[ver.AccessKeyID]
		switch {
		case ver.State == vault.StateDestroyed:
		case !exists && ver.State != vault.StateCurrent:
			// Deleted (by us before a crash, or by someone else): its secret must go too.
			_, leaked := v.leaks[ver.AccessKeyID]
			if err := e.recorded(ctx, func(ctx context.Context) error {
				if leaked {
					if err := e.Leaks.ResolveLeak(ctx, ver.AccessKeyID, e.now()); err != nil {
						return err
					}
				}
				return e.Vault.Destroy(ctx, id, ver.Number)
			},
				e.event(ActionDestroyed, id, audit.Success, "access_key_id", ver.AccessKeyID, "reason", "the key is gone from the cloud")); err != nil {
				return ks, err
			}
			changed = true
		case exists && ver.State == vault.StatePrevious && k.Status == cloud.KeyInactive:
			if err := e.recorded(ctx, func(ctx context.Context) error { return e.Vault.Deactivate(ctx, id, ver.Number) },
				e.event(ActionDeactivated, id, audit.Success, "access_key_id", ver.AccessKeyID, "reason", "found inactive in the cloud")); err != nil {
				return ks, err
			}
			changed = true
		}
	}
	if changed {
		if versions, err = e.Vault.VersionsOf(ctx, id); err != nil {
			return ks, err
		}
	}
	ks.keys, ks.versions = keys, versions
	if currentVersion(versions) == nil {
		if active := activeKeys(keys); len(active) == 1 {
			ks.adopt = &active[0]
		}
	}
	return ks, nil
}

// adopt records a key that predates Keyward (if key is not nil) as the identity's current version.
// Another process may have adopted it first: that is no error.
func (v *visit) adopt(ctx context.Context, key *cloud.AccessKey) error {
	if key == nil {
		return nil
	}
	e := v.e
	err := e.recorded(ctx, func(ctx context.Context) error {
		_, err := e.Vault.Adopt(ctx, v.id, key.ID, key.CreatedAt)
		return err
	}, e.event(ActionAdopted, v.id, audit.Success, "access_key_id", key.ID))
	if errors.Is(err, vault.ErrDuplicate) {
		return nil // adopted meanwhile by another process
	} else if err != nil {
		return err
	}
	v.res.Actions = append([]Action{{Kind: KindAdopted, KeyID: key.ID}}, v.res.Actions...)
	return nil
}

// retire deactivates and deletes the old keys that are due (decideRetirement), telling their owners
// ahead of a deactivation, and holds an old key still in use.
func (v *visit) retire(ctx context.Context, versions []vault.Version) error {
	current := currentVersion(versions)
	now := v.e.now()
	for _, st := range decideRetirement(v.pol, current, versions, v.leaks) {
		switch {
		case st.Next == NextDeactivate && now.Before(st.Due):
			if v.e.NoticeLead > 0 && !now.Before(st.Due.Add(-v.e.NoticeLead)) {
				if err := v.e.upcoming(ctx, v.id, st.Version.AccessKeyID, st.Due); err != nil {
					return err
				}
			}
		case st.Next == NextDeactivate:
			if err := v.deactivate(ctx, st.Version, current, st.Leaked); err != nil {
				return err
			}
		case st.Next == NextDelete && !now.Before(st.Due):
			if err := v.deleteRetired(ctx, st.Version); err != nil {
				return err
			}
		}
	}
	return nil
}

// deactivate deactivates a previous key that is due, unless it signed a request after the current
// key took over and has not been quiet since: then it is held. A leaked key is never held.
func (v *visit) deactivate(ctx context.Context, old vault.Version, current *vault.Version, leaked bool) error {
	e, id := v.e, v.id
	reason := []string{}
	if leaked {
		reason = []string{"reason", "reported exposed: deactivated at once"}
	} else {
		lu, err := e.Cloud.AccessKeyLastUsed(ctx, id.AccountID, old.AccessKeyID)
		if err != nil {
			return fmt.Errorf("last use of %s: %w", old.AccessKeyID, err)
		}
		if v.pol.stillInUse(lu.At, current.CurrentAt, e.now()) {
			v.res.Outcome = Held
			v.res.Reason = fmt.Sprintf("old key %s still in use since %s", old.AccessKeyID, lu.At.Format(time.RFC3339))
			return e.record(ctx, e.event(ActionHeld, id, audit.Success, "access_key_id", old.AccessKeyID, "last_used", lu.At.Format(time.RFC3339)))
		}
	}
	if err := e.crashAt("deactivate"); err != nil {
		return err
	}
	if err := e.Cloud.SetAccessKeyStatus(ctx, id.AccountID, id.UserName, old.AccessKeyID, cloud.KeyInactive); err != nil {
		return fmt.Errorf("deactivate %s: %w", old.AccessKeyID, err)
	}
	if err := e.crashAt("deactivated"); err != nil {
		return err
	}
	if err := e.recorded(ctx, func(ctx context.Context) error { return e.Vault.Deactivate(ctx, id, old.Number) },
		e.event(ActionDeactivated, id, audit.Success, append([]string{"access_key_id", old.AccessKeyID}, reason...)...)); err != nil {
		return err
	}
	v.res.did(KindDeactivated, old.AccessKeyID)
	if v.res.Outcome == Skipped {
		v.res.Outcome = Deactivated
	}
	return nil
}

// deleteRetired deletes an inactive key Keyward retired, once DeleteAfter has passed, and shreds
// its secret.
func (v *visit) deleteRetired(ctx context.Context, old vault.Version) error {
	e, id := v.e, v.id
	if err := e.crashAt("delete"); err != nil {
		return err
	}
	if err := e.Cloud.DeleteAccessKey(ctx, id.AccountID, id.UserName, old.AccessKeyID); err != nil && !errors.Is(err, cloud.ErrNoSuchEntity) {
		return fmt.Errorf("delete %s: %w", old.AccessKeyID, err)
	}
	if err := e.crashAt("deleted"); err != nil {
		return err
	}
	if e.Delivery != nil {
		v.forget(ctx, old.AccessKeyID)
	}
	_, leaked := v.leaks[old.AccessKeyID]
	if err := e.recorded(ctx, func(ctx context.Context) error {
		if leaked {
			if err := e.Leaks.ResolveLeak(ctx, old.AccessKeyID, e.now()); err != nil {
				return err
			}
		}
		return e.Vault.Destroy(ctx, id, old.Number)
	}, e.event(ActionDeleted, id, audit.Success, "access_key_id", old.AccessKeyID)); err != nil {
		return err
	}
	v.res.did(KindDeleted, old.AccessKeyID)
	if v.res.Outcome == Skipped || v.res.Outcome == Deactivated {
		v.res.Outcome = Deleted
	}
	return nil
}

// rotateIfDue rotates the user's current key if decideRotation says it is due, and otherwise
// records a key to adopt alone.
func (v *visit) rotateIfDue(ctx context.Context, ks keyState) error {
	current := currentVersion(ks.versions)
	if ks.adopt != nil {
		current = &vault.Version{Identity: ks.id, AccessKeyID: ks.adopt.ID, State: vault.StateCurrent, CreatedAt: ks.adopt.CreatedAt.UTC()}
	}
	if current == nil {
		if len(activeKeys(ks.keys)) > 1 {
			v.res.Outcome, v.res.Reason = Blocked, ReasonTwoUnknownActive
			return v.e.record(ctx, v.e.event(ActionBlocked, ks.id, audit.Success, "reason", v.res.Reason))
		}
		v.res.Reason = ReasonNoActiveKey
		return nil
	}
	now := v.e.now()
	_, leaked := v.leaks[current.AccessKeyID] // a leaked current key is replaced now
	facts := rotationFacts{CreatedAt: current.CreatedAt, Force: v.opts.Force || leaked, Backoff: v.e.backoff, Now: now}
	// The key's age first: the last rotation is read only for a user whose key is due.
	if !decideRotation(v.pol, facts).due(now) {
		return v.adopt(ctx, ks.adopt)
	}
	last, err := v.e.lastFinished(ctx, ks.id)
	if err != nil {
		return err
	}
	facts.Last = last
	d := decideRotation(v.pol, facts)
	if !d.due(now) {
		v.res.Reason = d.Reason
		return v.adopt(ctx, ks.adopt)
	}
	return v.rotate(ctx, ks, current, d.Attempt)
}

// rotate makes room for a new key and begins a rotation, then drives it. A key to adopt (the user's
// first rotation) is recorded in the same transaction as the rotation's beginning.
func (v *visit) rotate(ctx context.Context, ks keyState, current *vault.Version, attempt int) error {
	if _, err := v.targetsOf(ctx); err != nil { // a bad keyward:deliver-to tag stops the rotation before a key is made
		return fmt.Errorf("delivery targets: %w", err)
	}
	if blocked, err := v.makeRoom(ctx, ks); err != nil {
		return err
	} else if blocked {
		return v.adopt(ctx, ks.adopt)
	}
	rec, err := v.begin(ctx, ks.adopt, Record{Identity: v.id, Step: StepCreate, Phase: PhaseStarted,
		OldKeyID: current.AccessKeyID, Attempt: attempt}, "old_key_id", current.AccessKeyID, "attempt", fmt.Sprint(attempt))
	switch {
	case errors.Is(err, vault.ErrDuplicate), errors.Is(err, vault.ErrConflict):
		v.res.Reason = "taken under management meanwhile by another process"
		return nil
	case errors.Is(err, ErrBusy):
		v.res.Reason = "rotation in progress elsewhere"
		return nil
	case errors.Is(err, ErrStale):
		v.res.Reason = "rotated meanwhile by another process"
		return nil
	case err != nil:
		return err
	}
	if ks.adopt != nil {
		v.res.Actions = append([]Action{{Kind: KindAdopted, KeyID: ks.adopt.ID}}, v.res.Actions...)
	}
	v.opts.begun(rec)
	return v.drive(ctx, rec, false)
}

// makeRoom deletes an inactive key Keyward may delete when the user holds two; with none to delete
// (never an active key), the user is blocked.
func (v *visit) makeRoom(ctx context.Context, ks keyState) (blocked bool, err error) {
	if len(ks.keys) < 2 {
		return false, nil
	}
	e, id := v.e, v.id
	room := v.pol.roomFor(ks.keys, keyStates(ks.versions), e.now())
	if room == nil {
		var err error
		if room, err = v.emergencyRoom(ctx, ks); err != nil {
			return false, err
		}
	}
	if room == nil {
		v.res.Outcome, v.res.Reason = Blocked, noRoomReason(ks.keys)+v.roomAt(ks)
		return true, e.record(ctx, e.event(ActionBlocked, id, audit.Success, "reason", v.res.Reason))
	}
	if err := e.Cloud.DeleteAccessKey(ctx, id.AccountID, id.UserName, room.ID); err != nil && !errors.Is(err, cloud.ErrNoSuchEntity) {
		return false, fmt.Errorf("delete %s to make room: %w", room.ID, err)
	}
	err = e.recorded(ctx, func(ctx context.Context) error {
		for _, ver := range ks.versions {
			if ver.AccessKeyID == room.ID {
				return e.Vault.Destroy(ctx, id, ver.Number)
			}
		}
		return nil // a foreign key, deleted under a rule: the vault never held it
	}, e.event(ActionDeleted, id, audit.Success, "access_key_id", room.ID, "reason", "to make room for a new key"))
	if err != nil {
		return false, err
	}
	v.res.did(KindDeleted, room.ID)
	return false, nil
}

// roomAt says when there will be room for a new key by itself: once Keyward's previous key is
// deactivated (deactivate_after after its replacement, later while it is still in use). "" when
// the keys in the way are not Keyward's to retire.
func (v *visit) roomAt(ks keyState) string {
	for _, ver := range ks.versions {
		if ver.State == vault.StatePrevious && !ver.PreviousAt.IsZero() {
			at := ver.PreviousAt.Add(v.pol.DeactivateAfter)
			return fmt.Sprintf(". A new rotation can happen once the previous key %s is deactivated, at %s at the earliest (deactivate_after %s after its replacement; later while it is still in use)",
				ver.AccessKeyID, at.UTC().Format(time.RFC3339), v.pol.DeactivateAfter)
		}
	}
	return ""
}

// emergencyRoom makes room for the replacement of a leaked current key when the user also holds a
// previous key that is still active: that key is Keyward's own and, if it has been quiet since the
// current key took over, it is deactivated now, ahead of its time, and becomes the key deleted to make
// room. A previous key still in use is left alone (and the user is blocked: someone must choose).
func (v *visit) emergencyRoom(ctx context.Context, ks keyState) (*cloud.AccessKey, error) {
	current := currentVersion(ks.versions)
	if current == nil {
		return nil, nil
	}
	if _, leaked := v.leaks[current.AccessKeyID]; !leaked {
		return nil, nil
	}
	e, id := v.e, v.id
	for _, ver := range ks.versions {
		if ver.State != vault.StatePrevious {
			continue
		}
		lu, err := e.Cloud.AccessKeyLastUsed(ctx, id.AccountID, ver.AccessKeyID)
		if err != nil {
			return nil, fmt.Errorf("last use of %s: %w", ver.AccessKeyID, err)
		}
		if lu.At.After(current.CurrentAt) {
			return nil, nil // still in use: not for Keyward to take away
		}
		if err := e.Cloud.SetAccessKeyStatus(ctx, id.AccountID, id.UserName, ver.AccessKeyID, cloud.KeyInactive); err != nil {
			return nil, fmt.Errorf("deactivate %s: %w", ver.AccessKeyID, err)
		}
		if err := e.recorded(ctx, func(ctx context.Context) error { return e.Vault.Deactivate(ctx, id, ver.Number) },
			e.event(ActionDeactivated, id, audit.Success, "access_key_id", ver.AccessKeyID,
				"reason", "unused since it was replaced; deactivated early to make room for the emergency rotation of a leaked key")); err != nil {
			return nil, err
		}
		v.res.did(KindDeactivated, ver.AccessKeyID)
		for i, k := range ks.keys {
			if k.ID == ver.AccessKeyID {
				room := ks.keys[i]
				room.Status = cloud.KeyInactive
				return &room, nil
			}
		}
	}
	return nil, nil
}

// begin writes the rotation's record (create/started) — and the key to adopt, if any, with it — in
// one transaction: from here a restart resumes the rotation. detail is the started record's.
func (v *visit) begin(ctx context.Context, adopt *cloud.AccessKey, rec Record, detail ...string) (Record, error) {
	e, id := v.e, v.id
	now := e.now()
	rec.StartedAt, rec.StepAt = now, now
	err := e.Store.Atomically(ctx, func(ctx context.Context) error {
		var events []step
		if adopt != nil {
			if _, err := e.Vault.Adopt(ctx, id, adopt.ID, adopt.CreatedAt); err != nil {
				return err
			}
			events = append(events, e.event(ActionAdopted, id, audit.Success, "access_key_id", adopt.ID))
		}
		var err error
		if rec, err = e.Store.Begin(ctx, rec, e.Owner, e.lease()); err != nil {
			return err
		}
		return e.record(ctx, append(events, e.event(ActionStarted, id, audit.Success, append(detail, "rotation", fmt.Sprint(rec.ID))...))...)
	})
	return rec, err
}
