package rotation_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/cloud"
	"github.com/keyward/keyward/internal/cloud/sim"
	"github.com/keyward/keyward/internal/notify"
	"github.com/keyward/keyward/internal/rotation"
	"github.com/keyward/keyward/internal/secret"
	"github.com/keyward/keyward/internal/store"
	"github.com/keyward/keyward/internal/store/storetest"
	"github.com/keyward/keyward/internal/testenv"
	"github.com/keyward/keyward/internal/vault"
)

const acct = "123456789012"

const day = 24 * time.Hour

// world is one cloud, one vault and the engine over them, with time under the test's control.
type world struct {
	t      *testing.T
	clock  *testenv.Clock
	cloud  *sim.Cloud
	db     *store.DB
	vault  *vault.Vault
	trail  *audit.Trail
	policy rotation.Policy
	fault  func(op, user string) error

	mu       sync.Mutex
	observed map[string]int // rotations finished, by outcome, as the engines told Observe

	notifier   rotation.Notifier
	noticeLead time.Duration
	delivery   *rotation.Delivery
}

func newWorld(t *testing.T, d testenv.Database) *world {
	t.Helper()
	w := &world{t: t, clock: testenv.NewClock(time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)), policy: rotation.DefaultPolicy()}
	w.cloud = sim.New(sim.WithClock(w.clock.Now), sim.WithKeyDelay(10*time.Second), sim.WithFault(func(op, _, user string) error {
		if w.fault != nil {
			return w.fault(op, user)
		}
		return nil
	}))
	w.db = storetest.Open(t, d)
	w.vault = storetest.Vault(t, w.db, w.clock.Now)
	w.trail = audit.New(w.db.Audit(), w.clock.Now, nil)
	return w
}

func sqlite(t *testing.T) testenv.Database {
	return testenv.Database{Driver: "sqlite", DSN: filepath.Join(t.TempDir(), "k.db")}
}

// engine returns an engine as a (re)started process would have: its own owner id.
func (w *world) engine(owner string, hook rotation.Hook) *rotation.Engine {
	return rotation.New(rotation.Engine{
		Cloud: storetest.GuardCloud(w.t, w.cloud), Vault: w.vault, Store: w.db.Rotations(), Policy: w.policy, Owner: owner, Hook: hook, Audit: w.trail,
		Notifier: w.notifier, NoticeLead: w.noticeLead, Delivery: w.delivery,
		Now:   w.clock.Now,
		Sleep: func(_ context.Context, d time.Duration) error { w.clock.Add(d); return nil },
		Observe: func(outcome string, _ time.Duration) {
			w.mu.Lock()
			defer w.mu.Unlock()
			if w.observed == nil {
				w.observed = map[string]int{}
			}
			w.observed[outcome]++
		},
	})
}

func (w *world) visit(user string, force bool) rotation.Result {
	w.t.Helper()
	res, err := w.engine("main", nil).Visit(context.Background(), cloud.User{AccountID: acct, Name: user, Tags: w.tags(user)}, rotation.VisitOptions{Force: force})
	if err != nil {
		w.t.Fatalf("visit %s: %v", user, err)
	}
	return res
}

func (w *world) tags(user string) map[string]string {
	var tags map[string]string
	_ = w.cloud.ListUsers(context.Background(), acct, func(u cloud.User) error {
		if u.Name == user {
			tags = u.Tags
		}
		return nil
	})
	return tags
}

// addUser creates a user with one key of the given age.
func (w *world) addUser(name string, keyAge time.Duration, tags map[string]string) cloud.NewAccessKey {
	w.cloud.AddUser(acct, name, "/", tags)
	return w.cloud.AddKey(acct, name, w.clock.Now().Add(-keyAge), cloud.KeyActive)
}

func id(user string) vault.Identity {
	return vault.Identity{Cloud: "aws", AccountID: acct, UserName: user}
}

// events returns the user's audit records of an action, optionally only those whose detail has key = value.
func (w *world) events(user, action string, kv ...string) []audit.Record {
	w.t.Helper()
	var out []audit.Record
	err := w.trail.Export(context.Background(), time.Time{}, time.Time{}, func(r audit.Record) error {
		if r.Target == id(user).String() && (action == "" || r.Action == action) && (len(kv) < 2 || r.Detail[kv[0]] == kv[1]) {
			out = append(out, r)
		}
		return nil
	})
	if err != nil {
		w.t.Fatal(err)
	}
	return out
}

func actions(r rotation.Result) string {
	var kinds []string
	for _, a := range r.Actions {
		kinds = append(kinds, string(a.Kind))
	}
	return strings.Join(kinds, ",")
}

// checkInvariants asserts what must hold after every pass: the user has exactly one current key, it
// works, the vault holds its secret; every key in the cloud is one the vault accounts for.
func (w *world) checkInvariants(user string) {
	w.t.Helper()
	ctx := context.Background()
	cur, err := w.vault.Current(ctx, id(user))
	if err != nil {
		w.t.Fatalf("%s: no current credential: %v", user, err)
	}
	w.clock.Add(time.Minute) // past the key delay
	if _, err := w.cloud.Verify(ctx, acct, cur.AccessKeyID, cur.SecretAccessKey); err != nil {
		w.t.Fatalf("%s: the current key does not work: %v", user, err)
	}
	versions, err := w.vault.VersionsOf(ctx, id(user))
	if err != nil {
		w.t.Fatal(err)
	}
	live := map[string]vault.State{}
	for _, v := range versions {
		if v.State != vault.StateDestroyed {
			live[v.AccessKeyID] = v.State
		}
	}
	for _, k := range w.cloud.Keys(acct, user) {
		if _, ok := live[k.ID]; !ok {
			w.t.Fatalf("%s: key %s is in the cloud but the vault cannot account for it", user, k.ID)
		}
	}
	current := 0
	for _, s := range live {
		if s == vault.StateCurrent {
			current++
		}
	}
	if current != 1 {
		w.t.Fatalf("%s: %d current versions", user, current)
	}
	// The audit trail is intact and tells how the current key came to be: once.
	if rep, err := w.trail.Verify(ctx, func(string, []byte, []byte) bool { return false }, nil); err != nil || !rep.OK() {
		w.t.Fatalf("audit trail: %+v %v", rep, err)
	}
	if cur.Origin == vault.OriginCreated {
		if n := len(w.events(user, rotation.ActionRotated, "new_key_id", cur.AccessKeyID)); n != 1 {
			w.t.Fatalf("%s: %d %s records for the current key %s, want 1", user, n, rotation.ActionRotated, cur.AccessKeyID)
		}
	}
}

func TestRotateLifecycle(t *testing.T) {
	testenv.ForEachDatabase(t, func(t *testing.T, d testenv.Database) {
		w := newWorld(t, d)
		old := w.addUser("alice", 100*day, nil)

		res := w.visit("alice", false)
		if res.Outcome != rotation.Rotated || actions(res) != "adopted,created,verified,promoted" {
			t.Fatalf("first visit: %+v", res)
		}
		w.checkInvariants("alice")
		cur, _ := w.vault.Current(context.Background(), id("alice"))
		for _, k := range w.cloud.Keys(acct, "alice") {
			if k.ID == cur.AccessKeyID && !k.Secret.Equal(cur.SecretAccessKey) {
				t.Fatal("the vault holds another secret than the cloud issued")
			}
			if k.Status != cloud.KeyActive {
				t.Fatalf("key %s is %s right after rotation; both must stay active", k.ID, k.Status)
			}
		}
		if r := w.visit("alice", false); r.Outcome != rotation.Skipped {
			t.Fatalf("a fresh key was touched: %+v", r)
		}

		w.clock.Add(10 * day)
		if r := w.visit("alice", false); r.Outcome != rotation.Deactivated || actions(r) != "deactivated" {
			t.Fatalf("after the grace period: %+v", r)
		}
		if ks := w.cloud.Keys(acct, "alice"); len(ks) != 2 || ks[slices.IndexFunc(ks, func(k cloud.NewAccessKey) bool { return k.ID == old.ID })].Status != cloud.KeyInactive {
			t.Fatalf("old key not deactivated in the cloud: %+v", ks)
		}
		w.clock.Add(10 * day)
		if r := w.visit("alice", false); r.Outcome != rotation.Deleted || actions(r) != "deleted" {
			t.Fatalf("after the delete delay: %+v", r)
		}
		if ks := w.cloud.Keys(acct, "alice"); len(ks) != 1 || ks[0].ID != cur.AccessKeyID {
			t.Fatalf("keys left: %+v", ks)
		}
		w.checkInvariants("alice")

		// The audit trail tells the whole story, in order, naming keys by id and never by secret.
		var got []string
		for _, r := range w.events("alice", "") {
			got = append(got, r.Action)
			if r.Actor != "engine:main" || r.Outcome != audit.Success {
				t.Errorf("record %d: actor %q, outcome %q", r.Seq, r.Actor, r.Outcome)
			}
		}
		want := []string{rotation.ActionAdopted, rotation.ActionStarted, rotation.ActionCreated, rotation.ActionRotated,
			rotation.ActionDeactivated, rotation.ActionDeleted}
		if !slices.Equal(got, want) {
			t.Fatalf("audit actions %v, want %v", got, want)
		}
		if r := w.events("alice", rotation.ActionRotated)[0]; r.Detail["old_key_id"] != old.ID || r.Detail["new_key_id"] != cur.AccessKeyID {
			t.Fatalf("key.rotated detail: %v", r.Detail)
		}
		w.noSecretInTrail(old.Secret, cur.SecretAccessKey)
		if fmt.Sprint(w.observed) != "map[rotated:1]" {
			t.Fatalf("rotations observed: %v", w.observed)
		}
	})
}

// noSecretInTrail fails if any field of any audit record holds one of the secrets.
func (w *world) noSecretInTrail(secrets ...secret.Value) {
	w.t.Helper()
	err := w.trail.Export(context.Background(), time.Time{}, time.Time{}, func(r audit.Record) error {
		text := fmt.Sprintf("%+v", r)
		for _, s := range secrets {
			if strings.Contains(text, s.Reveal()) {
				w.t.Fatalf("audit record %d holds a secret", r.Seq)
			}
		}
		return nil
	})
	if err != nil {
		w.t.Fatal(err)
	}
}

func TestHeldWhileOldKeyInUse(t *testing.T) {
	w := newWorld(t, sqlite(t))
	old := w.addUser("alice", 100*day, nil)
	w.visit("alice", false)
	w.clock.Add(10 * day)
	w.cloud.UseKey(old.ID, w.clock.Now().Add(-time.Hour)) // a consumer still on the old key
	r := w.visit("alice", false)
	if r.Outcome != rotation.Held || !strings.Contains(r.Reason, "still in use since") {
		t.Fatalf("old key in use: %+v", r)
	}
	if held := w.events("alice", rotation.ActionHeld, "access_key_id", old.ID); len(held) != 1 {
		t.Fatalf("%d %s records for the old key, want 1", len(held), rotation.ActionHeld)
	}
	w.clock.Add(2 * day) // quiet since
	if r := w.visit("alice", false); r.Outcome != rotation.Deactivated {
		t.Fatalf("after going quiet: %+v", r)
	}

	w2 := newWorld(t, sqlite(t))
	w2.policy.ForceDeactivate = true
	old2 := w2.addUser("bob", 100*day, nil)
	w2.visit("bob", false)
	w2.clock.Add(10 * day)
	w2.cloud.UseKey(old2.ID, w2.clock.Now())
	if r := w2.visit("bob", false); r.Outcome != rotation.Deactivated {
		t.Fatalf("force_deactivate: %+v", r)
	}
}

func TestPolicyPerUser(t *testing.T) {
	w := newWorld(t, sqlite(t))
	w.addUser("young", 10*day, nil)
	w.addUser("tagged", 40*day, map[string]string{rotation.TagRotateAfter: "30d"})
	w.addUser("exempt", 400*day, map[string]string{rotation.TagExempt: "true"})
	w.addUser("badtag", 40*day, map[string]string{rotation.TagRotateAfter: "soon"})
	if r := w.visit("young", false); r.Outcome != rotation.Skipped {
		t.Errorf("young key: %+v", r)
	}
	if r := w.visit("young", true); r.Outcome != rotation.Rotated {
		t.Errorf("--force on a young key: %+v", r)
	}
	if r := w.visit("tagged", false); r.Outcome != rotation.Rotated {
		t.Errorf("tag keyward:rotate-after=30d on a 40-day key: %+v", r)
	}
	calls := w.cloud.Calls()["CreateAccessKey"]
	if r := w.visit("exempt", false); r.Outcome != rotation.Exempt || w.cloud.Calls()["CreateAccessKey"] != calls {
		t.Errorf("exempt user: %+v", r)
	}
	if r := w.visit("badtag", false); r.Outcome != rotation.Failed || !strings.Contains(r.Reason, "keyward:rotate-after") {
		t.Errorf("malformed tag: %+v", r)
	}
}

func TestTwoKeys(t *testing.T) {
	w := newWorld(t, sqlite(t))
	w.addUser("twoactive", 100*day, nil)
	w.cloud.AddKey(acct, "twoactive", w.clock.Now().Add(-50*day), cloud.KeyActive)
	if r := w.visit("twoactive", false); r.Outcome != rotation.Blocked || !strings.Contains(r.Reason, "two active keys") {
		t.Fatalf("two active keys: %+v", r)
	}
	if len(w.cloud.Keys(acct, "twoactive")) != 2 {
		t.Fatal("a blocked user's keys were changed")
	}

	w.addUser("foreign", 100*day, nil)
	foreign := w.cloud.AddKey(acct, "foreign", w.clock.Now().Add(-200*day), cloud.KeyInactive)
	if r := w.visit("foreign", false); r.Outcome != rotation.Blocked {
		t.Fatalf("foreign inactive key without a rule: %+v", r)
	}
	w.policy.DeleteForeignInactiveAfter = 180 * day
	if r := w.visit("foreign", false); r.Outcome != rotation.Rotated || r.Actions[0] != (rotation.Action{Kind: "deleted", KeyID: foreign.ID}) {
		t.Fatalf("foreign inactive key under the rule: %+v", r)
	}
	w.checkInvariants("foreign")

	// A key Keyward retired itself makes room without any rule.
	w2 := newWorld(t, sqlite(t))
	w2.policy.RotateAfter, w2.policy.DeactivateAfter, w2.policy.DeleteAfter = 20*day, 1*day, 100*day
	w2.addUser("alice", 30*day, nil)
	w2.visit("alice", false) // rotated
	w2.clock.Add(2 * day)
	w2.visit("alice", false) // old key deactivated, not yet deleted
	w2.clock.Add(20 * day)
	r := w2.visit("alice", false)
	if r.Outcome != rotation.Rotated || r.Actions[0].Kind != "deleted" {
		t.Fatalf("retired key should make room: %+v", r)
	}
	w2.checkInvariants("alice")
}

func TestVerificationFailureRollsBack(t *testing.T) {
	testenv.ForEachDatabase(t, func(t *testing.T, d testenv.Database) {
		w := newWorld(t, d)
		old := w.addUser("alice", 100*day, nil)
		w.fault = func(op, _ string) error {
			if op == "Verify" {
				return cloud.ErrKeyRefused
			}
			return nil
		}
		r := w.visit("alice", false)
		if r.Outcome != rotation.Failed || !strings.Contains(r.Reason, "verification failed") || !strings.Contains(actions(r), "rolled_back") {
			t.Fatalf("failed verification: %+v", r)
		}
		keys := w.cloud.Keys(acct, "alice")
		if len(keys) != 1 || keys[0].ID != old.ID || keys[0].Status != cloud.KeyActive {
			t.Fatalf("after rollback the cloud holds %+v; want only the old key, active", keys)
		}
		versions, _ := w.vault.VersionsOf(context.Background(), id("alice"))
		if len(versions) != 2 || versions[0].State != vault.StateCurrent || versions[1].State != vault.StateDestroyed {
			t.Fatalf("vault after rollback: %+v", versions)
		}
		failed := w.events("alice", rotation.ActionFailed)
		if len(failed) != 1 || failed[0].Outcome != audit.Failure || failed[0].Detail["new_key_id"] != versions[1].AccessKeyID ||
			!strings.Contains(failed[0].Detail["reason"], "verification failed") {
			t.Fatalf("audit of the failure: %+v", failed)
		}
		if r := w.visit("alice", false); r.Outcome != rotation.Skipped || !strings.Contains(r.Reason, "backing off") {
			t.Fatalf("right after a failure: %+v", r)
		}
		w.fault = nil
		w.clock.Add(11 * time.Minute)
		if r := w.visit("alice", false); r.Outcome != rotation.Rotated {
			t.Fatalf("retry after the backoff: %+v", r)
		}
		if fmt.Sprint(w.observed) != "map[failed:1 rotated:1]" {
			t.Fatalf("rotations observed: %v", w.observed)
		}
		w.checkInvariants("alice")
	})
}

// TestCreateAnswerLost: CreateAccessKey made the key but its answer never came back (a connection
// cut after the request reached IAM). The key's secret is nowhere, so the failed rotation deletes it
// before recording the failure: the user is left with its old key only, not blocked by a key nobody
// can use, and the next attempt rotates.
func TestCreateAnswerLost(t *testing.T) {
	testenv.ForEachDatabase(t, func(t *testing.T, d testenv.Database) {
		w := newWorld(t, d)
		old := w.addUser("alice", 100*day, nil)
		w.fault = func(op, _ string) error {
			if op == "CreateAccessKey.answer" {
				return errors.New("read tcp: connection reset by peer")
			}
			return nil
		}
		r := w.visit("alice", false)
		if r.Outcome != rotation.Failed || !strings.Contains(r.Reason, "connection reset") || !strings.Contains(actions(r), "deleted_orphan") {
			t.Fatalf("a create whose answer was lost: %+v", r)
		}
		if keys := w.cloud.Keys(acct, "alice"); len(keys) != 1 || keys[0].ID != old.ID || keys[0].Status != cloud.KeyActive {
			t.Fatalf("after it the cloud holds %+v; want only the old key, active", keys)
		}
		w.fault = nil
		w.clock.Add(11 * time.Minute)
		if r := w.visit("alice", false); r.Outcome != rotation.Rotated {
			t.Fatalf("the next attempt: %+v", r)
		}
		w.checkInvariants("alice")
	})
}

// TestCrashAtEveryPoint stops the engine at each point of the protocol, as a killed process stops,
// then lets a restarted process (another owner, after the lease ran out) finish the work.
func TestCrashAtEveryPoint(t *testing.T) {
	points := []string{"create", "created", "stored", "verify", "promote", "promoted", "deactivate", "deactivated", "delete", "deleted"}
	for _, point := range points {
		t.Run(point, func(t *testing.T) {
			testenv.ForEachDatabase(t, func(t *testing.T, d testenv.Database) {
				w := newWorld(t, d)
				w.notifier = &notify.Notifier{Outbox: w.db.Outbox(), Now: w.clock.Now, Router: &notify.Router{
					Global: []notify.Route{{Channel: "webhook", Destination: "https://hooks.example.com/k"}}}}
				w.addUser("alice", 100*day, nil)
				if point == "deactivate" || point == "deactivated" || point == "delete" || point == "deleted" {
					w.visit("alice", false)
					w.clock.Add(10 * day)
					if point == "delete" || point == "deleted" {
						w.visit("alice", false)
						w.clock.Add(10 * day)
					}
				}
				crashed := errors.New("killed")
				_, err := w.engine("first", func(p string) error {
					if p == point {
						return crashed
					}
					return nil
				}).Visit(context.Background(), cloud.User{AccountID: acct, Name: "alice"}, rotation.VisitOptions{})
				if !errors.Is(err, rotation.ErrCrashed) {
					t.Fatalf("the hook at %q did not stop the visit: %v", point, err)
				}
				// A restart: the old lease must run out before another process may take over.
				if r, err := w.engine("second", nil).Visit(context.Background(), cloud.User{AccountID: acct, Name: "alice"}, rotation.VisitOptions{}); err != nil ||
					(r.Outcome != rotation.Skipped && point != "deactivate" && point != "deactivated" && point != "delete" && point != "deleted") {
					t.Fatalf("another process took over a leased rotation: %+v %v", r, err)
				}
				w.clock.Add(6 * time.Minute)
				for range 2 {
					if _, err := w.engine("second", nil).Visit(context.Background(), cloud.User{AccountID: acct, Name: "alice"}, rotation.VisitOptions{}); err != nil {
						t.Fatal(err)
					}
				}
				w.checkInvariants("alice")
				versions, _ := w.vault.VersionsOf(context.Background(), id("alice"))
				cur := versions[slices.IndexFunc(versions, func(v vault.Version) bool { return v.State == vault.StateCurrent })]
				if !cur.HasSecret {
					t.Fatalf("after recovery the current key is the adopted one: the rotation was not finished: %+v", versions)
				}
				if open, ok, _ := w.db.Rotations().Open(context.Background(), id("alice")); ok {
					t.Fatalf("rotation still open after recovery: %+v", open)
				}
				// The notice of each thing done was queued once: not lost, not doubled by the crash.
				ds, err := w.db.Outbox().Claim(context.Background(), "t", w.clock.Now().Add(time.Hour), w.clock.Now().Add(2*time.Hour), 100)
				if err != nil {
					t.Fatal(err)
				}
				counts := map[string]int{}
				for _, dl := range ds {
					counts[dl.Notice.Event]++
				}
				if counts[notify.KeyRotated] != 1 {
					t.Fatalf("notices after recovery: %v, want key.rotated once", counts)
				}
				if strings.HasPrefix(point, "de") && point != "delete" && point != "deleted" && counts[notify.KeyDeactivated] != 1 {
					t.Fatalf("notices after recovery: %v, want key.deactivated once", counts)
				}
				if (point == "delete" || point == "deleted") && (counts[notify.KeyDeactivated] != 1 || counts[notify.KeyDeleted] != 1) {
					t.Fatalf("notices after recovery: %v, want key.deactivated and key.deleted once", counts)
				}
			})
		})
	}
}

// TestConcurrentEnginesNeverRotateTwice runs two engines (as serve and rotate --once) on the same
// users at once: each user is rotated exactly once.
func TestConcurrentEnginesNeverRotateTwice(t *testing.T) {
	testenv.ForEachDatabase(t, func(t *testing.T, d testenv.Database) {
		w := newWorld(t, d)
		const users = 20
		for i := range users {
			w.addUser(fmt.Sprintf("user-%02d", i), 100*day, nil)
		}
		var wg sync.WaitGroup
		for _, owner := range []string{"serve", "rotate-once"} {
			e := w.engine(owner, nil)
			wg.Go(func() {
				for i := range users {
					if _, err := e.Visit(context.Background(), cloud.User{AccountID: acct, Name: fmt.Sprintf("user-%02d", i)}, rotation.VisitOptions{}); err != nil {
						t.Error(err)
					}
				}
			})
		}
		wg.Wait()
		if n := w.cloud.Calls()["CreateAccessKey"]; n != users {
			t.Fatalf("%d keys created for %d users", n, users)
		}
		for i := range users {
			w.checkInvariants(fmt.Sprintf("user-%02d", i))
		}
	})
}

func TestMaxKeyLife(t *testing.T) {
	p := rotation.DefaultPolicy()
	if got := p.MaxKeyLife(10 * time.Minute); got != 110*day+33*time.Minute {
		t.Fatalf("MaxKeyLife = %v", got)
	}
}

// TestPassOverManyUsers runs a pass over 1,200 users in two accounts (pages of 100), with a mix of
// due, fresh and exempt keys and a user whose creation fails, and filters by user and account.
func TestPassOverManyUsers(t *testing.T) {
	w := newWorld(t, sqlite(t))
	const perAccount = 600
	other := "210987654321"
	for _, a := range []string{acct, other} {
		for i := range perAccount {
			name := fmt.Sprintf("user-%04d", i)
			tags := map[string]string{}
			if i%100 == 7 {
				tags[rotation.TagExempt] = "true"
			}
			w.cloud.AddUser(a, name, "/", tags)
			age := 10 * day
			if i%3 == 0 {
				age = 100 * day
			}
			w.cloud.AddKey(a, name, w.clock.Now().Add(-age), cloud.KeyActive)
		}
	}
	w.fault = func(op, user string) error {
		if op == "CreateAccessKey" && user == "user-0003" {
			return cloud.ErrThrottled
		}
		return nil
	}
	var progressCalls int
	rep, err := w.engine("main", nil).Pass(context.Background(), rotation.PassOptions{Concurrency: 4, Progress: func(done, known int) {
		progressCalls++
		if done > known {
			t.Errorf("progress %d of %d", done, known)
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	s := rep.Summary
	// i%3==0 → due (200 per account), of which i%100==7 exempt when also i%3==0 (none: 7,107,…,507 — 207 and 507 are ≡0 mod 3).
	if s.Scanned != 2*perAccount || s.Exempt != 12 || s.Failed != 2 || s.Rotated != 2*(200-2)-2 || progressCalls != s.Scanned || len(rep.Users) != s.Scanned {
		t.Fatalf("summary %+v (progress calls %d, results %d)", s, progressCalls, len(rep.Users))
	}
	if w.cloud.Pages() < 12 {
		t.Fatalf("users were listed in %d pages; want 6 pages per account of 100", w.cloud.Pages())
	}

	rep, err = w.engine("main", nil).Pass(context.Background(), rotation.PassOptions{Users: []string{"user-0001"}, AccountID: other, Force: true})
	if err != nil || rep.Summary.Scanned != 1 || rep.Summary.Rotated != 1 || rep.Users[0].Identity.AccountID != other {
		t.Fatalf("filtered, forced pass: %+v, %v", rep, err)
	}
}

func TestPolicyRules(t *testing.T) {
	p := rotation.DefaultPolicy()
	p.Rules = []rotation.Rule{
		{PathPrefix: "/ci/", RotateAfter: 30 * day},
		{NameGlob: "break-glass-*", Exempt: true},
		{NameGlob: "*", PathPrefix: "/ci/", RotateAfter: 7 * day}, // shadowed by the first
	}
	tests := []struct {
		user       cloud.User
		wantRotate time.Duration
		wantExempt bool
	}{
		{cloud.User{Name: "builder", Path: "/ci/"}, 30 * day, false},
		{cloud.User{Name: "builder", Path: "/ci/", Tags: map[string]string{rotation.TagRotateAfter: "12h"}}, 12 * time.Hour, false},
		{cloud.User{Name: "break-glass-1", Path: "/"}, 0, true},
		{cloud.User{Name: "app", Path: "/"}, 90 * day, false},
	}
	for _, tt := range tests {
		got, exempt, err := p.For(tt.user, nil)
		if err != nil || exempt != tt.wantExempt || (!exempt && got.RotateAfter != tt.wantRotate) {
			t.Errorf("%s%s: rotate after %v exempt %v (%v); want %v, %v", tt.user.Path, tt.user.Name, got.RotateAfter, exempt, err, tt.wantRotate, tt.wantExempt)
		}
	}
	if _, exempt, _ := (rotation.Policy{ExemptGroup: "humans"}).For(cloud.User{Name: "x"}, []string{"devs", "humans"}); !exempt {
		t.Error("member of the exempt group is not exempt")
	}
}

// TestPlanChangesNothing follows one user through its lifecycle with Plan beside each visit.
func TestPlanChangesNothing(t *testing.T) {
	w := newWorld(t, sqlite(t))
	old := w.addUser("alice", 100*day, nil)
	w.addUser("young", 5*day, nil)
	w.addUser("exempt", 500*day, map[string]string{rotation.TagExempt: "true"})
	e := w.engine("main", nil)
	plan := func(user string) rotation.Plan {
		return e.Plan(context.Background(), cloud.User{AccountID: acct, Name: user, Tags: w.tags(user)}, false)
	}
	before := w.cloud.Calls()
	p := plan("alice")
	if p.State != "due" || p.NextAction != "rotate" || p.NextKeyID != old.ID || p.Outcome(w.clock.Now()) != rotation.Rotated || p.Keys[0].AgeDays != 100 {
		t.Fatalf("plan of a due key: %+v", p)
	}
	if p := plan("young"); p.State != "ok" || !p.Due.Equal(w.clock.Now().Add(85*day)) || p.Outcome(w.clock.Now()) != rotation.Skipped {
		t.Fatalf("plan of a young key: %+v", p)
	}
	if p := plan("exempt"); p.State != "exempt" {
		t.Fatalf("plan of an exempt user: %+v", p)
	}
	plans, errs := e.PlanPass(context.Background(), rotation.PassOptions{})
	if len(plans) != 3 || len(errs) != 0 {
		t.Fatalf("PlanPass = %d plans, %v", len(plans), errs)
	}
	after := w.cloud.Calls()
	for _, op := range []string{"CreateAccessKey", "SetAccessKeyStatus", "DeleteAccessKey"} {
		if after[op] != before[op] {
			t.Fatalf("planning called %s", op)
		}
	}
	if list, _ := w.vault.List(context.Background()); len(list) != 0 {
		t.Fatalf("planning wrote to the vault: %+v", list)
	}

	w.visit("alice", false)
	if p := plan("alice"); p.NextAction != "deactivate" || p.NextKeyID != old.ID || !p.Due.Equal(w.clock.Now().Add(10*day)) {
		t.Fatalf("plan after rotation: %+v", p)
	}
	w.clock.Add(10 * day)
	w.cloud.UseKey(old.ID, w.clock.Now().Add(-time.Hour))
	if p := plan("alice"); p.State != "held" || p.Outcome(w.clock.Now()) != rotation.Held {
		t.Fatalf("plan while the old key is in use: %+v", p)
	}
	w.clock.Add(2 * day)
	w.visit("alice", false)
	if p := plan("alice"); p.NextAction != "delete" || p.NextKeyID != old.ID {
		t.Fatalf("plan after deactivation: %+v", p)
	}
}

// TestPolicyDocument keeps docs/POLICY.md's figure equal to MaxKeyLife with the defaults.
func TestPolicyDocument(t *testing.T) {
	data, err := os.ReadFile("../../docs/POLICY.md")
	if err != nil {
		t.Fatal(err)
	}
	got := rotation.DefaultPolicy().MaxKeyLife(10 * time.Minute)
	want := fmt.Sprintf("%d days %d minutes", int(got/day), int(got%day/time.Minute))
	if !strings.Contains(string(data), want) {
		t.Fatalf("docs/POLICY.md does not state the longest life %q", want)
	}
}

// TestNotices follows a key's life and checks the notices queued, to the admin route and to the
// owner named by the user's tag: each once, in order, none holding a secret.
func TestNotices(t *testing.T) {
	testenv.ForEachDatabase(t, func(t *testing.T, d testenv.Database) {
		w := newWorld(t, d)
		w.notifier = &notify.Notifier{Outbox: w.db.Outbox(), Now: w.clock.Now, Router: &notify.Router{
			Global: []notify.Route{{Channel: "webhook", Destination: "https://hooks.example.com/k"}}}}
		w.noticeLead = 2 * day
		old := w.addUser("alice", 100*day, map[string]string{rotation.TagOwner: "alice@example.com"})
		w.visit("alice", false) // rotated
		w.clock.Add(7 * day)
		w.visit("alice", false) // nothing yet: deactivation is 3 days away
		w.clock.Add(1 * day)
		w.visit("alice", false) // 2 days away: upcoming
		w.clock.Add(time.Hour)
		w.visit("alice", false) // again: not queued twice
		w.clock.Add(2 * day)
		w.visit("alice", false) // deactivated
		w.clock.Add(10 * day)
		w.visit("alice", false) // deleted
		cur, _ := w.vault.Current(context.Background(), id("alice"))

		ds, err := w.db.Outbox().Claim(context.Background(), "t", w.clock.Now().Add(time.Hour), w.clock.Now().Add(2*time.Hour), 100)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string][]string{}
		for _, dl := range ds {
			got[dl.Channel+":"+dl.Destination] = append(got[dl.Channel+":"+dl.Destination], dl.Notice.Event)
			b, _ := json.Marshal(dl.Notice)
			if strings.Contains(string(b), old.Secret.Reveal()) || strings.Contains(string(b), cur.SecretAccessKey.Reveal()) {
				t.Fatalf("a notice holds a secret: %s", b)
			}
		}
		want := []string{notify.KeyRotated, notify.KeyDeactivationComing, notify.KeyDeactivated, notify.KeyDeleted}
		for _, dest := range []string{"webhook:https://hooks.example.com/k", "email:alice@example.com"} {
			if !slices.Equal(got[dest], want) {
				t.Errorf("%s was queued %v, want %v", dest, got[dest], want)
			}
		}
	})
}

// TestForcedRotationBlockedSaysWhen (issue 30 §7): a second forced rotation right after the first
// finds the previous key still active; it is blocked, and the reason says what to do and when a
// rotation can happen by itself (the previous key's deactivation: deactivate_after after it was
// replaced).
func TestForcedRotationBlockedSaysWhen(t *testing.T) {
	w := newWorld(t, sqlite(t))
	w.addUser("app", 10*day, nil)
	if r := w.visit("app", true); r.Outcome != rotation.Rotated {
		t.Fatalf("first forced rotation: %+v", r)
	}
	replaced := w.clock.Now()
	w.clock.Add(time.Minute)
	r := w.visit("app", true)
	when := replaced.Add(w.policy.DeactivateAfter).UTC().Format(time.RFC3339)
	if r.Outcome != rotation.Blocked || !strings.Contains(r.Reason, "move what still uses the old key") ||
		!strings.Contains(r.Reason, "A new rotation can happen once the previous key") || !strings.Contains(r.Reason[:len(r.Reason)-1], when[:16]) {
		t.Fatalf("second forced rotation: %+v (want the time %s)", r, when)
	}
}
