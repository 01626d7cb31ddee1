package rotation

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/keyward/keyward/internal/cloud"
	"github.com/keyward/keyward/internal/delivery"
	"github.com/keyward/keyward/internal/vault"
)

// KeyView is one key as status shows it: the cloud's view and the vault's.
type KeyView struct {
	AccessKeyID string          `json:"access_key_id"`
	Status      cloud.KeyStatus `json:"status,omitempty"` // in the cloud; empty when gone
	State       vault.State     `json:"state,omitempty"`  // in the vault; empty when unknown to it
	CreatedAt   time.Time       `json:"created_at"`
	AgeDays     int             `json:"age_days"`
}

// Plan is what the engine would do next for a user, found without changing anything.
type Plan struct {
	Identity   vault.Identity `json:"identity"`
	State      PlanState      `json:"state"`
	Reason     string         `json:"reason,omitempty"`
	Keys       []KeyView      `json:"keys"`
	NextAction NextAction     `json:"next_action"`
	NextKeyID  string         `json:"next_key_id,omitempty"`
	// Then is what the same visit does after NextAction: a rotation, when old keys are retired
	// now and the current key is due too.
	Then NextAction `json:"then,omitempty"`
	Due  time.Time  `json:"due,omitzero"`
	// Targets are the identity's delivery targets and whether each holds the current key (as the
	// delivery records say; `keyward deliver --check` asks the targets themselves).
	Targets []delivery.TargetState `json:"targets,omitempty"`
}

// Outcome is what a visit now would report for this plan (for --dry-run).
func (p Plan) Outcome(now time.Time) Outcome {
	switch p.State {
	case PlanExempt:
		return Exempt
	case PlanBlocked:
		return Blocked
	case PlanHeld:
		return Held
	case PlanError:
		return Failed
	case PlanDenied:
		return Denied
	}
	if p.Due.IsZero() || p.Due.After(now) {
		return Skipped
	}
	if p.Then == NextRotate {
		return Rotated
	}
	return map[NextAction]Outcome{NextRotate: Rotated, NextDeactivate: Deactivated, NextDelete: Deleted}[p.NextAction]
}

// Plan looks at a user and says what comes next, reading the cloud and the vault only. It decides
// as a visit does (decideRotation, and the retirement rules of retire), so that its outcome is the
// visit's (a property test holds it to that).
func (e *Engine) Plan(ctx context.Context, u cloud.User, force bool) Plan {
	id := vault.Identity{Cloud: vault.CloudAWS, AccountID: u.AccountID, UserName: u.Name}
	p := Plan{Identity: id, State: PlanOK, NextAction: NextNone}
	if u.Denied != "" {
		return p.failed(&cloud.DeniedError{Action: u.Denied, Doing: "list tags of " + u.Name, Err: cloud.ErrAccessDenied})
	}
	pol, exempt, err := e.policyFor(ctx, u)
	if err != nil {
		return p.failed(err)
	}
	keys, err := e.Cloud.ListAccessKeys(ctx, u.AccountID, u.Name)
	if err != nil {
		return p.failed(err)
	}
	versions, err := e.Vault.VersionsOf(ctx, id)
	if err != nil {
		return p.failed(err)
	}
	leaks, err := e.leaksFor(ctx, VisitOptions{})
	if err != nil {
		return p.failed(err)
	}
	ps := planState{keyState: keyState{id: id, keys: keys, versions: versions}, force: force, now: e.now(), leaks: leaks}
	p.Keys, ps.current = keyViews(keys, versions, ps.now)
	if p.Targets, err = e.targetStates(ctx, u, versions); err != nil {
		return p.failed(err)
	}
	if exempt {
		p.State = PlanExempt
		return p
	}
	if rec, open, err := e.Store.Open(ctx, id); err != nil {
		return p.failed(err)
	} else if open {
		p.State, p.NextAction, p.Due = PlanRotating, NextResume, ps.now
		p.Reason = fmt.Sprintf("rotation %d stopped at %s/%s", rec.ID, rec.Step, rec.Phase)
		return p
	}
	active := activeKeys(keys)
	if ps.current == nil && len(active) == 1 { // would be adopted
		ps.current = &active[0]
	}
	if ps.current == nil {
		p.State, p.Reason = PlanUnmanaged, ReasonNoActiveKey
		if len(active) > 1 {
			p.State, p.Reason = PlanBlocked, ReasonTwoUnknownActive
		}
		return p
	}
	return e.planNext(ctx, pol, ps, p)
}

// targetStates is what the identity's delivery targets hold, from the delivery records.
func (e *Engine) targetStates(ctx context.Context, u cloud.User, versions []vault.Version) ([]delivery.TargetState, error) {
	if e.Delivery == nil {
		return nil, nil
	}
	id := vault.Identity{Cloud: vault.CloudAWS, AccountID: u.AccountID, UserName: u.Name}
	specs, err := e.Delivery.Router.For(ctx, id, u.Tags)
	if err != nil {
		return nil, err
	}
	records, err := e.Delivery.Records.Deliveries(ctx, id)
	if err != nil {
		return nil, err
	}
	cur := ""
	if v := currentVersion(versions); v != nil {
		cur = v.AccessKeyID
	}
	return delivery.States(specs, records, cur), nil
}

// planState is what a plan decides from: the user's keys, its current cloud key, and the moment.
type planState struct {
	keyState
	current *cloud.AccessKey
	force   bool
	now     time.Time
	leaks   map[string]Leak
}

func (p Plan) failed(err error) Plan {
	p.State, p.Reason = PlanError, err.Error()
	if action, denied := cloud.DeniedAction(err); denied {
		p.State, p.Reason = PlanDenied, OutsidePermissions(action)
	}
	return p
}

// keyViews shows each cloud key with its vault state, and finds the current one.
func keyViews(keys []cloud.AccessKey, versions []vault.Version, now time.Time) ([]KeyView, *cloud.AccessKey) {
	state := map[string]vault.State{}
	for _, v := range versions {
		if v.State != vault.StateDestroyed {
			state[v.AccessKeyID] = v.State
		}
	}
	var views []KeyView
	var current *cloud.AccessKey
	for i, k := range keys {
		views = append(views, KeyView{AccessKeyID: k.ID, Status: k.Status, State: state[k.ID], CreatedAt: k.CreatedAt,
			AgeDays: int(now.Sub(k.CreatedAt) / (24 * time.Hour))})
		if state[k.ID] == vault.StateCurrent {
			current = &keys[i]
		}
	}
	return views, current
}

// planNext plans a managed user's next step: retirement of old keys first, as in a visit, which
// retires every key that is due and then, with the keys as they are afterwards, rotates if the
// current key is due too.
func (e *Engine) planNext(ctx context.Context, pol Policy, ps planState, p Plan) Plan {
	last, err := e.lastFinished(ctx, ps.id)
	if err != nil {
		return p.failed(err)
	}
	_, leaked := ps.leaks[ps.current.ID]
	d := decideRotation(pol, rotationFacts{CreatedAt: ps.current.CreatedAt, Last: last, Force: ps.force || leaked, Backoff: e.backoff, Now: ps.now})
	retired := false
	if cv := currentVersion(ps.versions); cv != nil && cv.AccessKeyID == ps.current.ID {
		r, err := e.planRetirement(ctx, pol, *cv, ps.versions, ps.leaks)
		if err != nil {
			return p.failed(err)
		}
		switch {
		case r.held != nil:
			// Held; and if the current key is due as well, the visit goes on to find no room for a
			// new one beside the two active keys: blocked.
			p.State, p.NextAction, p.NextKeyID, p.Due, p.Reason = PlanHeld, NextDeactivate, r.held.AccessKeyID, r.heldUntil, r.heldReason
			if d.due(ps.now) && noRoom(pol, ps.keyState, ps.now) {
				p.State, p.NextAction, p.NextKeyID, p.Due, p.Reason = PlanBlocked, NextRotate, ps.current.ID, ps.now, noRoomReason(ps.keys)
			}
			return p
		case r.next != "" && len(r.retireNow) == 0:
			p.NextAction, p.NextKeyID, p.Due = r.next, r.nextKeyID, r.nextDue
			return p
		case len(r.retireNow) > 0:
			p.NextAction, p.NextKeyID, p.Due = r.next, r.nextKeyID, r.nextDue
			ps.keys, ps.versions = r.after(ps.keys, ps.versions, ps.now)
			retired = true
		}
	}
	if retired { // retirement now; a rotation too, in the same visit, if the key is due
		if d.due(ps.now) {
			p.Then = NextRotate
			if noRoom(pol, ps.keyState, ps.now) {
				p.State, p.Reason = PlanBlocked, noRoomReason(ps.keys)
			}
		}
	} else {
		p.NextAction, p.NextKeyID, p.Due = NextRotate, ps.current.ID, d.Due
		if d.Reason != "" {
			p.State, p.Reason = PlanBackingOff, d.Reason
		}
		if d.due(ps.now) && noRoom(pol, ps.keyState, ps.now) {
			p.State, p.Reason = PlanBlocked, noRoomReason(ps.keys)
		}
	}
	if p.State == PlanOK && !p.Due.After(ps.now) {
		p.State = PlanDue
	}
	return p
}

// noRoom says whether a new key would find no room: two keys, and neither one Keyward may delete.
func noRoom(pol Policy, ks keyState, now time.Time) bool {
	return len(ks.keys) >= 2 && pol.roomFor(ks.keys, keyStates(ks.versions), now) == nil
}

// noRoomReason says why there is no room (see noRoom).
func noRoomReason(keys []cloud.AccessKey) string {
	if len(keys) >= 2 && keys[0].Status == cloud.KeyActive && keys[1].Status == cloud.KeyActive {
		return ReasonNoRoomActive
	}
	return ReasonNoRoom
}

// DryRun is a pass that changes nothing: what Pass would do to each user, as a report of the same
// shape, each action named "would_" and what it would be.
func (e *Engine) DryRun(ctx context.Context, opts PassOptions) Report {
	plans, errs := e.PlanPass(ctx, opts)
	rep := Report{Errors: errs}
	now := e.now()
	for _, p := range plans {
		res := Result{Identity: p.Identity, Outcome: p.Outcome(now), Reason: p.Reason}
		if res.Outcome != Skipped && res.Outcome != Exempt && p.NextAction != NextNone {
			res.Actions = []Action{{Kind: Would(p.NextAction), KeyID: p.NextKeyID}}
		}
		rep.Users = append(rep.Users, res)
		rep.Summary.Add(res)
	}
	return rep
}

// PlanPass plans every selected user, like Pass, without changing anything.
func (e *Engine) PlanPass(ctx context.Context, opts PassOptions) ([]Plan, []string) {
	var plans []Plan
	errs := e.eachUser(ctx, opts, func(u cloud.User) {
		plans = append(plans, e.Plan(ctx, u, opts.Force))
		if opts.Progress != nil {
			opts.Progress(len(plans), len(plans))
		}
	})
	return plans, errs
}

// eachUser calls fn, one at a time, for every user of every account that opts selects; it returns
// what could not be listed.
func (e *Engine) eachUser(ctx context.Context, opts PassOptions, fn func(u cloud.User)) []string {
	accounts, err := e.Cloud.Accounts(ctx)
	if err != nil {
		return []string{fmt.Sprintf("list accounts: %v", err)}
	}
	var errs []string
	for _, a := range accounts {
		if opts.AccountID != "" && a.ID != opts.AccountID {
			continue
		}
		err := e.Cloud.ListUsers(ctx, a.ID, func(u cloud.User) error {
			if len(opts.Users) == 0 || slices.Contains(opts.Users, u.Name) {
				fn(u)
			}
			return ctx.Err()
		})
		if err != nil {
			errs = append(errs, fmt.Sprintf("list users of account %s: %v", a.ID, err))
		}
	}
	return errs
}

// retirement is what a visit now would do to a user's old keys.
type retirement struct {
	retireNow  []vault.Version // due now and not held: deactivated (previous) or deleted (inactive)
	next       NextAction      // the action a report names: a deletion before a deactivation, now before later
	nextKeyID  string
	nextDue    time.Time
	held       *vault.Version // an old key still in use: the visit holds it and does no more
	heldUntil  time.Time
	heldReason string
}

// planRetirement finds what a visit would retire now, hold, or retire later, as retire does it.
func (e *Engine) planRetirement(ctx context.Context, pol Policy, current vault.Version, versions []vault.Version, leaks map[string]Leak) (retirement, error) {
	var r retirement
	now := e.now()
	// The action a plan names: one due now before one due later (a deletion before a deactivation,
	// as a visit reports it), or else the soonest.
	consider := func(next NextAction, v vault.Version, due time.Time) {
		if !due.After(now) {
			r.retireNow = append(r.retireNow, v)
			if r.next == "" || r.nextDue.After(now) || next == NextDelete {
				r.next, r.nextKeyID, r.nextDue = next, v.AccessKeyID, due
			}
			return
		}
		if len(r.retireNow) == 0 && (r.next == "" || due.Before(r.nextDue)) {
			r.next, r.nextKeyID, r.nextDue = next, v.AccessKeyID, due
		}
	}
	for _, st := range decideRetirement(pol, &current, versions, leaks) {
		if st.Next == NextDeactivate && !st.Due.After(now) && !pol.ForceDeactivate && !st.Leaked {
			lu, err := e.Cloud.AccessKeyLastUsed(ctx, current.Identity.AccountID, st.Version.AccessKeyID)
			if err != nil {
				return r, err
			}
			if pol.stillInUse(lu.At, current.CurrentAt, now) {
				v := st.Version
				r.held, r.heldUntil = &v, lu.At.Add(pol.QuietPeriod)
				r.heldReason = fmt.Sprintf("old key %s still in use since %s", v.AccessKeyID, lu.At.Format(time.RFC3339))
				return r, nil
			}
		}
		consider(st.Next, st.Version, st.Due)
	}
	return r, nil
}

// after returns the keys and versions as they are once the keys due now are retired.
func (r retirement) after(keys []cloud.AccessKey, versions []vault.Version, now time.Time) ([]cloud.AccessKey, []vault.Version) {
	gone := map[string]vault.State{}
	for _, v := range r.retireNow {
		gone[v.AccessKeyID] = v.State
	}
	var ks []cloud.AccessKey
	for _, k := range keys {
		switch gone[k.ID] {
		case vault.StateInactive: // deleted
			continue
		case vault.StatePrevious: // deactivated
			k.Status = cloud.KeyInactive
		}
		ks = append(ks, k)
	}
	var vs []vault.Version
	for _, v := range versions {
		switch gone[v.AccessKeyID] {
		case vault.StateInactive:
			continue
		case vault.StatePrevious:
			v.State, v.InactiveAt = vault.StateInactive, now
		}
		vs = append(vs, v)
	}
	return ks, vs
}

// lastFinished is the identity's last finished rotation, nil when there is none.
func (e *Engine) lastFinished(ctx context.Context, id vault.Identity) (*Record, error) {
	last, ok, err := e.Store.LastFinished(ctx, id)
	if err != nil || !ok {
		return nil, err
	}
	return &last, nil
}
