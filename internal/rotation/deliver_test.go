package rotation_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/cloud"
	"github.com/keyward/keyward/internal/delivery"
	"github.com/keyward/keyward/internal/notify"
	"github.com/keyward/keyward/internal/rotation"
	"github.com/keyward/keyward/internal/secret"
	"github.com/keyward/keyward/internal/testenv"
	"github.com/keyward/keyward/internal/vault"
)

// Targets of the delivery tests: a secret and a parameter for every user.
var (
	secretTarget = delivery.Target{Match: delivery.Match{User: "*"}, Kind: delivery.SecretsManager, Name: "keyward/{account}/{user}"}
	paramTarget  = delivery.Target{Match: delivery.Match{Account: acct}, Kind: delivery.SSMParameter, Name: "/keyward/{user}", Format: delivery.Env}
)

func spec(t delivery.Target, user string) delivery.Spec {
	s := delivery.Spec{Kind: t.Kind, Name: strings.NewReplacer("{account}", acct, "{user}", user).Replace(t.Name), Region: "eu-west-1", Format: t.Format}
	if s.Format == "" {
		s.Format = delivery.JSON
	}
	return s
}

// deliverTo gives the world's engines an in-memory destination with both targets.
func (w *world) deliverTo(targets ...delivery.Target) *delivery.Memory {
	mem := delivery.NewMemory()
	w.delivery = &rotation.Delivery{Router: &delivery.Router{Targets: targets, DefaultRegion: "eu-west-1"}, To: mem,
		Records: w.db.Deliveries(), Timeout: time.Minute, RetryInterval: time.Second}
	return mem
}

// holds fails unless the target's current value is the vault's current key, secret included.
func (w *world) holds(mem *delivery.Memory, s delivery.Spec, user string) {
	w.t.Helper()
	cur, err := w.vault.Current(context.Background(), id(user))
	if err != nil {
		w.t.Fatal(err)
	}
	held, err := mem.Current(context.Background(), s)
	if err != nil {
		w.t.Fatal(err)
	}
	if want := s.Format.Render(cur.AccessKeyID, cur.SecretAccessKey); held.KeyID != cur.AccessKeyID || !held.Content.Equal(want) {
		w.t.Fatalf("%s holds %q, want the current key %s", s.Key(), held.KeyID, cur.AccessKeyID)
	}
}

// keywardKey gives a user a key Keyward created (an adopted key's secret is not in the vault, so
// it cannot be delivered) and returns it; the targets are not configured yet.
func (w *world) keywardKey(user string) vault.Credential {
	w.t.Helper()
	w.addUser(user, 100*day, nil)
	if r := w.visit(user, false); r.Outcome != rotation.Rotated {
		w.t.Fatalf("first rotation of %s: %+v", user, r)
	}
	cur, err := w.vault.Current(context.Background(), id(user))
	if err != nil {
		w.t.Fatal(err)
	}
	return cur
}

func TestDeliveryLifecycle(t *testing.T) {
	testenv.ForEachDatabase(t, func(t *testing.T, d testenv.Database) {
		w := newWorld(t, d)
		first := w.keywardKey("alice")
		mem := w.deliverTo(secretTarget, paramTarget)
		sm, ssm := spec(secretTarget, "alice"), spec(paramTarget, "alice")

		// Targets added to the configuration get the current key at the next visit, not at the
		// next rotation.
		if r := w.visit("alice", false); actions(r) != "delivered" {
			t.Fatalf("visit after targets were configured: %+v", r)
		}
		w.holds(mem, sm, "alice")
		w.holds(mem, ssm, "alice")
		if r := w.visit("alice", false); actions(r) != "" {
			t.Fatalf("a second visit delivered again: %+v", r)
		}

		w.clock.Add(95 * day)
		r := w.visit("alice", false)
		if r.Outcome != rotation.Rotated || actions(r) != "deactivated,deleted,created,verified,delivered,promoted" {
			t.Fatalf("rotation: %+v", r)
		}
		w.holds(mem, sm, "alice")
		w.holds(mem, ssm, "alice")
		if mem.Previous(sm) != first.AccessKeyID || mem.Previous(ssm) != first.AccessKeyID {
			t.Fatalf("previous: %q %q, want the old key %s", mem.Previous(sm), mem.Previous(ssm), first.AccessKeyID)
		}
		cur, _ := w.vault.Current(context.Background(), id("alice"))
		records, err := w.db.Deliveries().Deliveries(context.Background(), id("alice"))
		if err != nil || len(records) != 2 || records[0].AccessKeyID != cur.AccessKeyID || records[1].AccessKeyID != cur.AccessKeyID {
			t.Fatalf("delivery records: %+v %v", records, err)
		}
		if n := len(w.events("alice", rotation.ActionDelivered, "access_key_id", cur.AccessKeyID)); n != 2 {
			t.Fatalf("%d key.delivered records for the new key, want one per target", n)
		}

		// Deactivation leaves the targets as they are; deletion takes the deleted key's "previous" off.
		w.clock.Add(10 * day)
		w.visit("alice", false)
		if mem.Previous(sm) != first.AccessKeyID {
			t.Fatal("deactivating the old key changed a target")
		}
		w.clock.Add(10 * day)
		if r := w.visit("alice", false); r.Outcome != rotation.Deleted {
			t.Fatalf("delete: %+v", r)
		}
		if mem.Previous(sm) != "" || mem.Previous(ssm) != "" {
			t.Fatalf("the deleted key is still labelled previous: %q %q", mem.Previous(sm), mem.Previous(ssm))
		}
		w.holds(mem, sm, "alice")
		w.checkInvariants("alice")
		w.noSecretInTrail(first.SecretAccessKey, cur.SecretAccessKey)
	})
}

func TestDeliveryFailureRollsBack(t *testing.T) {
	testenv.ForEachDatabase(t, func(t *testing.T, d testenv.Database) {
		w := newWorld(t, d)
		w.notifier = &notify.Notifier{Outbox: w.db.Outbox(), Now: w.clock.Now, Router: &notify.Router{
			Global: []notify.Route{{Channel: "webhook", Destination: "https://hooks.example.com/k"}}}}
		old := w.keywardKey("alice")
		mem := w.deliverTo(secretTarget, paramTarget)
		w.visit("alice", false)
		w.clock.Add(95 * day)
		sm, ssm := spec(secretTarget, "alice"), spec(paramTarget, "alice")

		// The secret takes the new key; the parameter never does: after delivery.timeout the secret
		// is put back on the old key and the new key deleted.
		tries := 0
		mem.Fail = func(target, method string) error {
			if target == ssm.Key() && method == "Publish" {
				tries++
				return errors.New("AccessDeniedException: not allowed")
			}
			return nil
		}
		r := w.visit("alice", false)
		if r.Outcome != rotation.Failed || !strings.Contains(r.Reason, "delivery failed") || !strings.Contains(r.Reason, ssm.Key()) {
			t.Fatalf("failed delivery: %+v", r)
		}
		if tries < 3 {
			t.Fatalf("the failing target was tried %d times within the timeout, want retries", tries)
		}
		keys := w.cloud.Keys(acct, "alice")
		if len(keys) != 1 || keys[0].ID != old.AccessKeyID || keys[0].Status != cloud.KeyActive {
			t.Fatalf("after rollback the cloud holds %+v; want only the old key, active", keys)
		}
		w.holds(mem, sm, "alice")
		w.holds(mem, ssm, "alice")
		if n := len(w.events("alice", rotation.ActionDeliveryFailed)); n != 1 {
			t.Fatalf("%d delivery.failed records", n)
		}
		ds, _ := w.db.Outbox().Claim(context.Background(), "t", w.clock.Now().Add(time.Hour), w.clock.Now().Add(2*time.Hour), 100)
		counts := map[string]int{}
		for _, d := range ds {
			counts[d.Notice.Event]++
		}
		if counts[notify.DeliveryFailed] != 1 || counts[notify.RotationFailed] != 0 {
			t.Fatalf("notices: %v, want one delivery.failed (and no rotation.failed besides)", counts)
		}

		// Later, with the parameter writable again, the rotation goes through.
		mem.Fail = nil
		w.clock.Add(11 * time.Minute)
		if r := w.visit("alice", false); r.Outcome != rotation.Rotated {
			t.Fatalf("retry: %+v", r)
		}
		w.holds(mem, ssm, "alice")
		w.checkInvariants("alice")
	})
}

// A target Keyward did not create is not written (without adopt): the rotation is rolled back at
// once, without waiting for the timeout.
func TestDeliveryRefusesForeignTarget(t *testing.T) {
	w := newWorld(t, sqlite(t))
	mem := w.deliverTo(secretTarget)
	sm := spec(secretTarget, "alice")
	mem.AddForeign(sm, secret.New(`{"AccessKeyId":"AKIAFOREIGN","SecretAccessKey":"x"}`))
	old := w.addUser("alice", 100*day, nil)
	start := w.clock.Now()
	r := w.visit("alice", false)
	if r.Outcome != rotation.Failed || !strings.Contains(r.Reason, "not created by Keyward") {
		t.Fatalf("foreign target: %+v", r)
	}
	if took := w.clock.Now().Sub(start); took > 30*time.Second {
		t.Fatalf("a foreign target was retried for %s", took)
	}
	if keys := w.cloud.Keys(acct, "alice"); len(keys) != 1 || keys[0].ID != old.ID {
		t.Fatalf("keys: %+v (%+v)", keys, r)
	}
	if held, _ := mem.Current(context.Background(), sm); held.KeyID != "AKIAFOREIGN" {
		t.Fatalf("the foreign secret was changed: %q", held.KeyID)
	}
}

// When a target that took the new key cannot be put back, the new key is not deleted (programs
// reading that target use it): the rotation stays open and both keys active until it can finish.
func TestDeliveryStuckKeepsBothKeys(t *testing.T) {
	w := newWorld(t, sqlite(t))
	mem := w.deliverTo(secretTarget, paramTarget)
	w.addUser("alice", 100*day, nil)
	sm, ssm := spec(secretTarget, "alice"), spec(paramTarget, "alice")
	mem.Fail = func(target, method string) error {
		if (target == ssm.Key() && method == "Publish") || (target == sm.Key() && method == "Withdraw") {
			return errors.New("unreachable")
		}
		return nil
	}
	r := w.visit("alice", false)
	if r.Outcome == rotation.Rotated {
		t.Fatalf("rotated without the parameter: %+v", r)
	}
	keys := w.cloud.Keys(acct, "alice")
	if len(keys) != 2 || keys[0].Status != cloud.KeyActive || keys[1].Status != cloud.KeyActive {
		t.Fatalf("keys while a target is stuck on the new key: %+v", keys)
	}
	held, _ := mem.Current(context.Background(), sm)
	if held.KeyID != keys[1].ID && held.KeyID != keys[0].ID {
		t.Fatalf("secret holds %q", held.KeyID)
	}
	if _, open, _ := w.db.Rotations().Open(context.Background(), id("alice")); !open {
		t.Fatal("the rotation was closed while a target holds a key that is not current")
	}
	mem.Fail = nil
	if r := w.visit("alice", false); r.Outcome != rotation.Rotated {
		t.Fatalf("once the targets answer: %+v", r)
	}
	w.holds(mem, sm, "alice")
	w.holds(mem, ssm, "alice")
	w.checkInvariants("alice")
}

// TestCrashDuringDelivery stops the engine at each point of the delivery step: a restarted process
// finishes the rotation, every target ends on the vault's current key, and no token was written twice.
func TestCrashDuringDelivery(t *testing.T) {
	for _, point := range []string{"deliver", "staged", "delivered", "promote"} {
		t.Run(point, func(t *testing.T) {
			testenv.ForEachDatabase(t, func(t *testing.T, d testenv.Database) {
				w := newWorld(t, d)
				mem := w.deliverTo(secretTarget, paramTarget)
				w.addUser("alice", 100*day, nil)
				u := cloud.User{AccountID: acct, Name: "alice"}
				_, err := w.engine("first", func(p string) error {
					if p == point {
						return errors.New("killed")
					}
					return nil
				}).Visit(context.Background(), u, rotation.VisitOptions{})
				if !errors.Is(err, rotation.ErrCrashed) {
					t.Fatalf("the hook at %q did not stop the visit: %v", point, err)
				}
				rec, open, _ := w.db.Rotations().Open(context.Background(), id("alice"))
				if !open || rec.Step != rotation.StepDeliver {
					t.Fatalf("after a crash at %s the rotation is %+v (open %v), want open at deliver", point, rec, open)
				}
				w.clock.Add(6 * time.Minute)
				r, err := w.engine("second", nil).Visit(context.Background(), u, rotation.VisitOptions{})
				if err != nil || r.Outcome != rotation.Rotated {
					t.Fatalf("resume: %+v %v", r, err)
				}
				w.holds(mem, spec(secretTarget, "alice"), "alice")
				w.holds(mem, spec(paramTarget, "alice"), "alice")
				for token, n := range mem.Writes {
					if n != 1 {
						t.Fatalf("token %s written %d times", token, n)
					}
				}
				w.checkInvariants("alice")
				if got := fmt.Sprint(len(w.events("alice", rotation.ActionDelivered))); got != "2" {
					t.Fatalf("%s key.delivered records, want 2", got)
				}
			})
		})
	}
}

// CheckDeliveries reads the targets themselves: one changed behind Keyward's back is stale, named,
// and repaired on request; the plan shows every target with what it was last given.
func TestCheckAndRepairDeliveries(t *testing.T) {
	testenv.ForEachDatabase(t, func(t *testing.T, d testenv.Database) {
		w := newWorld(t, d)
		w.keywardKey("alice")
		mem := w.deliverTo(secretTarget, paramTarget)
		w.visit("alice", false)
		e := w.engine("cli", nil)
		if checks, errs := e.CheckDeliveries(context.Background(), rotation.PassOptions{}, false); len(errs) != 0 || len(checks) != 2 || checks[0].Stale || checks[1].Stale {
			t.Fatalf("check of fresh targets: %+v %v", checks, errs)
		}
		sm := spec(secretTarget, "alice")
		other := delivery.NewPayload(sm, vault.Credential{Version: vault.Version{AccessKeyID: "AKIAOTHER"}, SecretAccessKey: secret.New("x")}, "by hand")
		if err := delivery.Put(context.Background(), mem, sm, other); err != nil {
			t.Fatal(err)
		}
		checks, _ := e.CheckDeliveries(context.Background(), rotation.PassOptions{}, false)
		if !checks[0].Stale || checks[0].Held != "AKIAOTHER" || checks[0].Target != sm.Key() || checks[1].Stale {
			t.Fatalf("check after a change by hand: %+v", checks)
		}
		checks, _ = e.CheckDeliveries(context.Background(), rotation.PassOptions{}, true)
		if !checks[0].Repaired {
			t.Fatalf("repair: %+v", checks)
		}
		w.holds(mem, sm, "alice")
		if n := len(w.events("alice", rotation.ActionDelivered, "reason", "repair")); n != 1 {
			t.Fatalf("%d repair records", n)
		}
		plan := e.Plan(context.Background(), cloud.User{AccountID: acct, Name: "alice"}, false)
		if len(plan.Targets) != 2 || !plan.Targets[0].HoldsCurrent || !plan.Targets[1].HoldsCurrent {
			t.Fatalf("plan's targets: %+v", plan.Targets)
		}
	})
}
