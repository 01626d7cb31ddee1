package rotation_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/cloud"
	"github.com/keyward/keyward/internal/notify"
	"github.com/keyward/keyward/internal/rotation"
	"github.com/keyward/keyward/internal/testenv"
	"github.com/keyward/keyward/internal/vault"
)

func (w *world) leakEngine(owner string, hook rotation.Hook) *rotation.Engine {
	e := w.engine(owner, hook)
	e.Leaks = w.db.Leaks()
	e.Policy.LeakDeleteAfter = time.Hour
	return e
}

func (w *world) keyStatus(user, keyID string) cloud.KeyStatus {
	for _, k := range w.cloud.Keys(acct, user) {
		if k.ID == keyID {
			return k.Status
		}
	}
	return "deleted"
}

// A leaked current key is replaced at once, and deactivated at once although a program used it a
// moment ago; it is deleted an hour later, and the leak is then resolved.
func TestLeakOfCurrentKey(t *testing.T) {
	testenv.ForEachDatabase(t, func(t *testing.T, d testenv.Database) {
		w := newWorld(t, d)
		w.notifier = &notify.Notifier{Outbox: w.db.Outbox(), Now: w.clock.Now, Router: &notify.Router{
			Global: []notify.Route{{Channel: "email", Destination: "security@example.com", Events: []string{notify.KeyLeaked}}}}}
		leaked := w.keywardKey("alice")
		w.clock.Add(time.Minute)
		if _, err := w.cloud.Verify(context.Background(), acct, leaked.AccessKeyID, leaked.SecretAccessKey); err != nil { // in use
			t.Fatal(err)
		}
		resp, err := w.leakEngine("main", nil).RespondToLeak(context.Background(), rotation.LeakReport{KeyID: leaked.AccessKeyID,
			ReportedBy: "user:dana", Via: "cli", Reason: "pushed to a public repository"})
		if err != nil || !resp.Managed || resp.Was != "current" || !resp.Inactive || !resp.FirstReport {
			t.Fatalf("response: %+v %v", resp, err)
		}
		// The adopted key before it, unused since, is deactivated and deleted early to make room.
		if got := actions(*resp.Result); got != "deactivated,deleted,created,verified,promoted,deactivated" {
			t.Fatalf("emergency rotation did %s", got)
		}
		if st := w.keyStatus("alice", leaked.AccessKeyID); st != cloud.KeyInactive {
			t.Fatalf("the leaked key is %s", st)
		}
		w.checkInvariants("alice")
		recs := w.events("alice", rotation.ActionLeaked)
		if len(recs) != 1 || recs[0].Detail["reported_by"] != "user:dana" || recs[0].Detail["via"] != "cli" || recs[0].Detail["was"] != "current" {
			t.Fatalf("key.leaked records: %+v", recs)
		}
		if n := len(w.events("alice", rotation.ActionDeactivated, "reason", "reported exposed: deactivated at once")); n != 1 {
			t.Fatalf("%d deactivations for the leak", n)
		}
		ds, _ := w.db.Outbox().Claim(context.Background(), "t", w.clock.Now(), w.clock.Now().Add(time.Hour), 100)
		if len(ds) != 1 || ds[0].Notice.Event != notify.KeyLeaked || ds[0].Notice.KeyID != leaked.AccessKeyID {
			t.Fatalf("notices: %+v", ds)
		}

		// Kept an hour for forensics, then deleted; the leak is resolved.
		w.clock.Add(30 * time.Minute)
		if r := w.visit("alice", false); r.Outcome != rotation.Skipped {
			t.Fatalf("half an hour later: %+v", r)
		}
		w.clock.Add(31 * time.Minute)
		if r, _ := w.leakEngine("main", nil).Visit(context.Background(), cloud.User{AccountID: acct, Name: "alice"}, rotation.VisitOptions{}); r.Outcome != rotation.Deleted {
			t.Fatalf("an hour later: %+v", r)
		}
		if open, _ := w.db.Leaks().OpenLeaks(context.Background()); len(open) != 0 {
			t.Fatalf("open leaks after the key was deleted: %+v", open)
		}
		// A second report of the same key is recorded, and changes nothing.
		again, err := w.leakEngine("main", nil).RespondToLeak(context.Background(), rotation.LeakReport{KeyID: leaked.AccessKeyID, ReportedBy: "user:erin", Via: "api"})
		if err != nil || again.FirstReport || again.Was != "destroyed" || !again.Inactive {
			t.Fatalf("a report of a deleted key: %+v %v", again, err)
		}
	})
}

// A leaked previous key (still in use, so held by the usual rule) is deactivated at once.
func TestLeakOfPreviousKey(t *testing.T) {
	w := newWorld(t, sqlite(t))
	old := w.keywardKey("alice")
	w.clock.Add(91 * day)
	if r := w.visit("alice", false); r.Outcome != rotation.Rotated {
		t.Fatalf("second rotation: %+v", r)
	}
	resp, err := w.leakEngine("main", nil).RespondToLeak(context.Background(), rotation.LeakReport{KeyID: old.AccessKeyID, ReportedBy: "cli:root", Via: "cli"})
	if err != nil || resp.Was != "previous" || !resp.Inactive {
		t.Fatalf("response: %+v %v", resp, err)
	}
	if st := w.keyStatus("alice", old.AccessKeyID); st != cloud.KeyInactive {
		t.Fatalf("the leaked previous key is %s", st)
	}
	w.checkInvariants("alice")
}

// A key Keyward does not manage is found in IAM and named, told of, and deactivated only on request.
func TestLeakOfUnmanagedKey(t *testing.T) {
	w := newWorld(t, sqlite(t))
	foreign := w.addUser("bob", 10*day, map[string]string{rotation.TagExempt: "true"})
	e := w.leakEngine("main", nil)
	resp, err := e.RespondToLeak(context.Background(), rotation.LeakReport{KeyID: foreign.ID, ReportedBy: "cli:root", Via: "cli"})
	if err != nil || resp.Managed || resp.Identity == nil || resp.Identity.UserName != "bob" || resp.Was != "active" || resp.Inactive ||
		!strings.Contains(resp.Next, "--deactivate-unmanaged") {
		t.Fatalf("response: %+v %v", resp, err)
	}
	if st := w.keyStatus("bob", foreign.ID); st != cloud.KeyActive {
		t.Fatalf("an unmanaged key was touched without the rule: %s", st)
	}
	resp, err = e.RespondToLeak(context.Background(), rotation.LeakReport{KeyID: foreign.ID, ReportedBy: "cli:root", Via: "cli", DeactivateUnmanaged: true})
	if err != nil || !resp.Inactive || w.keyStatus("bob", foreign.ID) != cloud.KeyInactive {
		t.Fatalf("with --deactivate-unmanaged: %+v %v", resp, err)
	}
	if r := w.visit("bob", false); r.Outcome != rotation.Exempt {
		t.Fatalf("bob afterwards: %+v", r)
	}
	// A key no account knows: recorded and told, nothing else.
	resp, err = e.RespondToLeak(context.Background(), rotation.LeakReport{KeyID: "AKIAZZZZZZZZZZZZZZZZ", ReportedBy: "cli:root", Via: "cli"})
	if err != nil || resp.Identity != nil || resp.Was != "unknown" {
		t.Fatalf("unknown key: %+v %v", resp, err)
	}
	for _, bad := range []string{"", "AKIA", "akiaiosfodnn7example", "AKIAIOSFODNN7EXAMPL!", "XKIAIOSFODNN7EXAMPLE"} {
		if _, err := e.RespondToLeak(context.Background(), rotation.LeakReport{KeyID: bad}); !errors.Is(err, rotation.ErrBadKeyID) {
			t.Errorf("key id %q: %v", bad, err)
		}
	}
}

// A crash in the middle of the emergency rotation: the next visit finishes it and still
// deactivates the leaked key at once.
func TestLeakCrashMidRotation(t *testing.T) {
	for _, point := range []string{"created", "verify", "promoted"} {
		t.Run(point, func(t *testing.T) {
			testenv.ForEachDatabase(t, func(t *testing.T, d testenv.Database) {
				w := newWorld(t, d)
				leaked := w.keywardKey("alice")
				w.clock.Add(time.Minute)
				_, err := w.leakEngine("first", func(p string) error {
					if p == point {
						return errors.New("killed")
					}
					return nil
				}).RespondToLeak(context.Background(), rotation.LeakReport{KeyID: leaked.AccessKeyID, ReportedBy: "cli:root", Via: "cli"})
				if !errors.Is(err, rotation.ErrCrashed) {
					t.Fatalf("the crash at %s: %v", point, err)
				}
				w.clock.Add(6 * time.Minute) // the dead process's lease runs out
				rep, err := w.leakEngine("second", nil).Pass(context.Background(), rotation.PassOptions{})
				if err != nil || len(rep.Users) != 1 {
					t.Fatalf("pass after the crash: %+v %v", rep, err)
				}
				if st := w.keyStatus("alice", leaked.AccessKeyID); st != cloud.KeyInactive {
					t.Fatalf("after the crash at %s and a pass, the leaked key is %s (%+v)", point, st, rep.Users[0])
				}
				w.checkInvariants("alice")
				if cur, _ := w.vault.Current(context.Background(), id("alice")); cur.AccessKeyID == leaked.AccessKeyID {
					t.Fatal("the leaked key is still current")
				}
				_ = vault.StateCurrent
			})
		})
	}
}
