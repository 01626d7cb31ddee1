package rotation_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/cloud"
	"github.com/keyward/keyward/internal/rotation"
)

// TestPlanSaysWhatVisitDoes: for random users — keys of random ages, some with a second key, some
// whose rotations failed for a while (building up backoffs) — over random stretches of time, the
// outcome a plan predicts is the outcome the visit that follows reports, on the simulated cloud
// whenever the cloud works (a plan cannot foresee a cloud that fails).
func TestPlanSaysWhatVisitDoes(t *testing.T) {
	seen := map[rotation.Outcome]int{}
	for seed := uint64(1); seed <= 20; seed++ {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 42))
			w := newWorld(t, sqlite(t))
			w.policy.VerifyTimeout = time.Minute
			failing := map[string]bool{}
			w.fault = func(op, user string) error {
				if op == "CreateAccessKey" && failing[user] {
					return fmt.Errorf("injected: %w", cloud.ErrLimitExceeded)
				}
				return nil
			}
			var users []string
			for i := range 12 {
				name := fmt.Sprintf("u%02d", i)
				users = append(users, name)
				w.addUser(name, time.Duration(r.IntN(200))*day, nil)
				switch r.IntN(4) {
				case 0: // a second, inactive key
					w.cloud.AddKey(acct, name, w.clock.Now().Add(-time.Duration(r.IntN(300))*day), cloud.KeyInactive)
				case 1: // a second, active key: blocked until one is gone
					w.cloud.AddKey(acct, name, w.clock.Now().Add(-time.Duration(r.IntN(300))*day), cloud.KeyActive)
				}
			}
			e := w.engine("main", nil)
			for round := range 12 {
				for _, u := range users {
					failing[u] = r.IntN(4) == 0
					user := cloud.User{AccountID: acct, Name: u, Tags: w.tags(u)}
					if failing[u] { // history: a failure, and its backoff
						if _, err := e.Visit(context.Background(), user, rotation.VisitOptions{}); err != nil {
							t.Fatal(err)
						}
						continue
					}
					if r.IntN(3) == 0 { // its keys were used an hour ago: an old one still in use is held
						for _, k := range w.cloud.Keys(acct, u) {
							w.cloud.UseKey(k.ID, w.clock.Now().Add(-time.Hour))
						}
					}
					p := e.Plan(context.Background(), user, false)
					want := p.Outcome(w.clock.Now())
					res, err := e.Visit(context.Background(), user, rotation.VisitOptions{})
					if err != nil {
						t.Fatal(err)
					}
					seen[res.Outcome]++
					if res.Outcome != want {
						t.Errorf("round %d, %s: the plan said %s (%s %s, %s), the visit did %s (%s; %s)", round, u, want,
							p.State, p.NextAction, p.Reason, res.Outcome, actions(res), res.Reason)
					}
				}
				w.clock.Add(time.Duration(1+r.IntN(40)) * day)
			}
		})
	}
	for _, o := range []rotation.Outcome{rotation.Rotated, rotation.Deactivated, rotation.Deleted, rotation.Held, rotation.Blocked, rotation.Skipped} {
		if seen[o] == 0 {
			t.Errorf("no visit was %s: the random worlds do not cover it (%v)", o, seen)
		}
	}
	t.Logf("outcomes compared: %v", seen)
}
