package rotation

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/backoff"
	"github.com/keyward/keyward/internal/delivery"
	"github.com/keyward/keyward/internal/vault"
)

// Delivery is what the engine needs to put keys where programs read them: which targets each
// identity has, the destination that writes them, and the record of what each target holds.
type Delivery struct {
	Router  *delivery.Router
	To      delivery.Destination
	Records delivery.Store
	// Timeout is how long a rotation keeps trying its targets before it is rolled back (default 2
	// minutes; it must stay within the rotation lease).
	Timeout time.Duration
	// RetryInterval is the first pause between tries of a target, doubled after each (default 1 s).
	RetryInterval time.Duration
}

func (d *Delivery) timeout() time.Duration {
	if d.Timeout > 0 {
		return d.Timeout
	}
	return 2 * time.Minute
}

func (d *Delivery) retryInterval() time.Duration {
	if d.RetryInterval > 0 {
		return d.RetryInterval
	}
	return time.Second
}

// Audit actions of delivery.
const (
	ActionDelivered      = "key.delivered"   // a target holds the key as its current value
	ActionDeliveryFailed = "delivery.failed" // a target could not be given the new key: rolled back
)

// targetsOf resolves the visited user's targets once per visit.
func (v *visit) targetsOf(ctx context.Context) ([]delivery.Spec, error) {
	if v.e.Delivery == nil || v.targetsKnown {
		return v.targets, nil
	}
	specs, err := v.e.Delivery.Router.For(ctx, v.id, v.user.Tags)
	if err != nil {
		return nil, err
	}
	v.targets, v.targetsKnown = specs, true
	return specs, nil
}

// deliver gives every target the new key: first each one stages it (written beside the current
// value, read back and checked), then each one publishes it (made current, the old value kept as
// previous). A target that fails is tried again, with pauses that double, until delivery.timeout
// has passed since the step began (at least once each, so a rotation resumed late still tries);
// then the targets are restored and the rotation rolled back. ok is false when it was rolled back.
func (v *visit) deliver(ctx context.Context) (ok bool, err error) {
	targets, err := v.targetsOf(ctx)
	if err != nil {
		return false, err
	}
	cred, err := v.e.Vault.Reveal(ctx, v.rec.Identity, v.rec.Version)
	if err != nil {
		return false, err
	}
	payloads := make([]delivery.Payload, len(targets))
	for i, t := range targets {
		payloads[i] = delivery.NewPayload(t, cred, fmt.Sprintf("rotation/%d", v.rec.ID))
	}
	deadline := v.rec.StepAt.Add(v.e.Delivery.timeout())
	if err := v.e.crashAt("deliver"); err != nil {
		return false, err
	}
	moves := targetMoves{targets: targets, payloads: payloads, deadline: deadline}
	failure := v.eachTarget(ctx, moves, "stage", v.e.Delivery.To.Stage)
	if failure == nil {
		if err := v.e.crashAt("staged"); err != nil {
			return false, err
		}
		failure = v.eachTarget(ctx, moves, "publish", v.e.Delivery.To.Publish)
	}
	if errors.Is(failure, ErrCrashed) || errors.Is(failure, context.Canceled) {
		return false, failure
	}
	if failure != nil {
		return false, v.undeliver(ctx, targets, payloads, failure)
	}
	if err := v.e.crashAt("delivered"); err != nil {
		return false, err
	}
	v.res.did(KindDelivered, v.rec.NewKeyID)
	return true, nil
}

// targetMoves are the targets of one delivery, each with its payload, and when trying must stop.
type targetMoves struct {
	targets  []delivery.Spec
	payloads []delivery.Payload
	deadline time.Time
}

// eachTarget runs one move on every target, trying a failing one again until the deadline. A target
// that is not Keyward's, that gives back other content, or whose refusal is permanent (a permission
// missing) is not tried again.
func (v *visit) eachTarget(ctx context.Context, m targetMoves, move string, do func(context.Context, delivery.Spec, delivery.Payload) error) error {
	for i, t := range m.targets {
		for try := 1; ; try++ {
			err := do(ctx, t, m.payloads[i])
			if err == nil {
				break
			}
			var permanent interface{ Permanent() bool } // a refusal only a person can lift (a permission)
			if errors.Is(err, context.Canceled) || errors.Is(err, delivery.ErrNotOurs) || errors.Is(err, delivery.ErrMismatch) ||
				(errors.As(err, &permanent) && permanent.Permanent()) {
				return fmt.Errorf("%s: %w", move, err)
			}
			pause := backoff.Exponential(v.e.Delivery.retryInterval(), 30*time.Second, try)
			var limited interface{ RetryAfter() time.Duration }
			if errors.As(err, &limited) { // a rate limit says when to come back
				pause = max(pause, limited.RetryAfter())
			}
			if !v.e.now().Add(pause).Before(m.deadline) {
				return fmt.Errorf("%s: not done within %s: %w", move, v.e.Delivery.timeout(), err)
			}
			v.e.Log.Warn("delivery failed; trying again", "identity", v.id.String(), "target", t.Key(), "try", try, "error", err)
			if err := v.e.Sleep(ctx, pause); err != nil {
				return err
			}
		}
	}
	return nil
}

// undeliver puts every target back on the old key, then rolls the rotation back (the new key is
// deleted). A target that cannot be put back leaves the rotation open at deliver — both keys stay
// active, for the consumers of either — and the next visit tries again.
func (v *visit) undeliver(ctx context.Context, targets []delivery.Spec, payloads []delivery.Payload, failure error) error {
	// The old key's secret, to put back where the target cannot go back by itself; a key adopted
	// with its secret unknown has none (its targets were first written by this rotation).
	old, err := v.e.Vault.Current(ctx, v.rec.Identity)
	if err != nil && !errors.Is(err, vault.ErrNoSecret) {
		return fmt.Errorf("%v; and reading the old key to restore the targets failed: %w", failure, err)
	}
	var stuck []string
	for i, t := range targets {
		var back *delivery.Payload
		if err == nil {
			p := delivery.NewPayload(t, old, fmt.Sprintf("restore/%d", v.rec.ID))
			back = &p
		}
		// A target that is not Keyward's was never written to.
		if err := v.e.Delivery.To.Withdraw(ctx, t, payloads[i], back); err != nil && !errors.Is(err, delivery.ErrNotOurs) {
			stuck = append(stuck, err.Error())
		}
	}
	if len(stuck) > 0 {
		v.e.Log.Error("delivery failed and some targets could not be put back on the old key: both keys stay active",
			"identity", v.id.String(), "rotation", v.rec.ID, "targets", strings.Join(stuck, "; "))
		return fmt.Errorf("%v; and the old key could not be restored: %s", failure, strings.Join(stuck, "; "))
	}
	return v.rollBackAs(ctx, ActionDeliveryFailed, fmt.Sprintf("delivery failed: %v", failure))
}

// recordDeliveries records, in the unit of work ctx carries, that every target holds keyID; detail
// is added to each key.delivered record.
func (e *Engine) recordDeliveries(ctx context.Context, id vault.Identity, targets []delivery.Spec, keyID string, detail ...string) error {
	now := e.now()
	for _, t := range targets {
		if err := e.Delivery.Records.RecordDelivery(ctx, delivery.Record{Identity: id, Target: t.Key(), AccessKeyID: keyID, DeliveredAt: now}); err != nil {
			return err
		}
		if err := e.record(ctx, e.event(ActionDelivered, id, audit.Success, append([]string{"access_key_id", keyID, "target", t.Key()}, detail...)...)); err != nil {
			return err
		}
	}
	return nil
}

// catchUp gives the current key to the targets whose record names another key (a target added to
// the configuration, a user just adopted): delivery is not only for rotations. A target that fails
// is tried again at the next visit.
func (v *visit) catchUp(ctx context.Context) error {
	targets, err := v.targetsOf(ctx)
	if err != nil || len(targets) == 0 {
		return err
	}
	versions, err := v.e.Vault.VersionsOf(ctx, v.id)
	if err != nil {
		return err
	}
	cur := currentVersion(versions)
	if cur == nil || !cur.HasSecret { // an adopted key's secret is not Keyward's to hand out
		return nil
	}
	records, err := v.e.Delivery.Records.Deliveries(ctx, v.id)
	if err != nil {
		return err
	}
	held := map[string]string{}
	for _, r := range records {
		held[r.Target] = r.AccessKeyID
	}
	var stale []delivery.Spec
	for _, t := range targets {
		if held[t.Key()] != cur.AccessKeyID {
			stale = append(stale, t)
		}
	}
	if len(stale) == 0 {
		return nil
	}
	cred, err := v.e.Vault.Reveal(ctx, v.id, cur.Number)
	if err != nil {
		return err
	}
	var done []delivery.Spec
	for _, t := range stale {
		p := delivery.NewPayload(t, cred, "current/"+cur.AccessKeyID)
		if err := delivery.Put(ctx, v.e.Delivery.To, t, p); err != nil {
			v.e.Log.Warn("could not give a target the current key; trying again at the next visit", "identity", v.id.String(), "target", t.Key(), "error", err)
			continue
		}
		done = append(done, t)
	}
	if len(done) == 0 {
		return nil
	}
	v.res.did(KindDelivered, cur.AccessKeyID)
	return v.e.Store.Atomically(ctx, func(ctx context.Context) error {
		return v.e.recordDeliveries(ctx, v.id, done, cur.AccessKeyID, "reason", "the target did not hold the current key")
	})
}

// forget takes the label "previous" off the deleted key's value in every target. It removes nothing
// else; a target that fails is logged and left (the label is all there is to take off).
func (v *visit) forget(ctx context.Context, keyID string) {
	targets, err := v.targetsOf(ctx)
	if err != nil {
		v.e.Log.Warn("delivery targets unknown: the deleted key's label stays on them", "identity", v.id.String(), "error", err)
		return
	}
	for _, t := range targets {
		if err := v.e.Delivery.To.Forget(ctx, t, keyID); err != nil {
			v.e.Log.Warn("could not take the deleted key's label off a target", "identity", v.id.String(), "target", t.Key(), "error", err)
		}
	}
}
