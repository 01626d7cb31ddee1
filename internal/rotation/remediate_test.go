package rotation_test

import (
	"context"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/cloud"
	"github.com/keyward/keyward/internal/rotation"
	"github.com/keyward/keyward/internal/testenv"
	"github.com/keyward/keyward/internal/vault"
)

// remediate unused touches only what it may: a managed identity's previous key; an unmanaged key
// only when asked; never an exempt user's key, nor a managed identity's current key.
func TestRemediateUnused(t *testing.T) {
	testenv.ForEachDatabase(t, func(t *testing.T, d testenv.Database) {
		w := newWorld(t, d)
		w.addUser("exempt", 100*day, map[string]string{rotation.TagExempt: "true"})
		old := w.addUser("managed", 100*day, nil)
		w.visit("managed", false) // rotated: old is previous (never used), the new one current
		w.clock.Add(60 * day)     // nothing used for 60 days
		unmanaged := w.addUser("unmanaged", 0, map[string]string{rotation.TagExempt: "true"})
		_ = unmanaged
		w.cloud.AddUser(acct, "foreign", "/", nil)
		foreign := w.cloud.AddKey(acct, "foreign", w.clock.Now().Add(-50*day), cloud.KeyActive)
		foreign2 := w.cloud.AddKey(acct, "foreign", w.clock.Now().Add(-49*day), cloud.KeyActive)
		_ = foreign2
		e := w.engine("main", nil)
		e.Policy.DeactivateAfter = 365 * day // so that no pass deactivates the previous key first

		// A dry run changes nothing.
		dry, errs := e.RemediateUnused(context.Background(), rotation.Remediation{OlderThan: 45 * day, IncludeUnmanaged: true, DryRun: true, Actor: "cli:test"})
		if len(errs) != 0 {
			t.Fatal(errs)
		}
		actions := map[string]string{}
		for _, r := range dry {
			actions[r.Identity.UserName+"/"+r.AccessKeyID] = r.Action
		}
		if actions["managed/"+old.ID] != "would_deactivate" || actions["exempt/"+w.cloud.Keys(acct, "exempt")[0].ID] != "left" ||
			actions["foreign/"+foreign.ID] != "would_deactivate" {
			t.Fatalf("dry run: %+v", dry)
		}
		for _, k := range w.cloud.Keys(acct, "managed") {
			if k.Status != cloud.KeyActive {
				t.Fatal("the dry run changed a key")
			}
		}

		got, errs := e.RemediateUnused(context.Background(), rotation.Remediation{OlderThan: 45 * day, Actor: "cli:test"})
		if len(errs) != 0 {
			t.Fatal(errs)
		}
		for _, r := range got {
			want := "left"
			if r.Identity.UserName == "managed" && r.AccessKeyID == old.ID {
				want = "deactivated"
			}
			if r.Action != want {
				t.Errorf("%s %s: %s (%s), want %s", r.Identity.UserName, r.AccessKeyID, r.Action, r.Reason, want)
			}
		}
		if w.keyStatus("managed", old.ID) != cloud.KeyInactive || w.keyStatus("foreign", foreign.ID) != cloud.KeyActive {
			t.Fatal("the keys are not as remediation said")
		}
		versions, _ := w.vault.VersionsOf(context.Background(), id("managed"))
		if versions[0].State != vault.StateInactive {
			t.Fatalf("the vault still calls the deactivated key %s", versions[0].State)
		}
		if n := len(w.events("managed", rotation.ActionDeactivated, "requested_by", "cli:test")); n != 1 {
			t.Fatalf("%d audit records of the deactivation", n)
		}
		w.checkInvariants("managed")

		// With --include-unmanaged, the foreign keys go too.
		got, _ = e.RemediateUnused(context.Background(), rotation.Remediation{OlderThan: 45 * day, IncludeUnmanaged: true, Actor: "cli:test"})
		if w.keyStatus("foreign", foreign.ID) != cloud.KeyInactive {
			t.Fatalf("include-unmanaged: %+v", got)
		}
		_ = time.Second
	})
}
