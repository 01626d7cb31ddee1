package rotation

import (
	"testing"
	"time"

	"github.com/keyward/keyward/internal/vault"
)

// TestDecideRotation covers every branch of the one rule for when a key is replaced.
func TestDecideRotation(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	pol := Policy{RotateAfter: 90 * 24 * time.Hour}
	backoff := func(n int) time.Duration { return time.Duration(n) * time.Hour }
	young, old := now.Add(-10*24*time.Hour), now.Add(-100*24*time.Hour)
	failed := func(attempt int, ago time.Duration) *Record {
		return &Record{Outcome: OutcomeFailed, Attempt: attempt, FinishedAt: now.Add(-ago)}
	}
	for _, c := range []struct {
		name      string
		createdAt time.Time
		last      *Record
		force     bool
		due       time.Time
		attempt   int
		backingOn bool
	}{
		{"young key: due at its age", young, nil, false, young.Add(pol.RotateAfter), 1, false},
		{"old key: due (in the past)", old, nil, false, old.Add(pol.RotateAfter), 1, false},
		{"young key, forced: now", young, nil, true, now, 1, false},
		{"old key after a rotation that worked", old, &Record{Outcome: OutcomeRotated, Attempt: 1}, false, old.Add(pol.RotateAfter), 1, false},
		{"old key, failed twice 1 h ago: backing off for 2 h", old, failed(2, time.Hour), false, now.Add(time.Hour), 3, true},
		{"old key, failed twice 3 h ago: the backoff is over", old, failed(2, 3*time.Hour), false, old.Add(pol.RotateAfter), 3, false},
		{"old key, failed, forced: now, as the next attempt", old, failed(2, time.Hour), true, now, 3, false},
		{"young key, failed long ago: its age decides", young, failed(1, 48*time.Hour), false, young.Add(pol.RotateAfter), 2, false},
	} {
		d := decideRotation(pol, rotationFacts{CreatedAt: c.createdAt, Last: c.last, Force: c.force, Backoff: backoff, Now: now})
		if !d.Due.Equal(c.due) || d.Attempt != c.attempt || (d.Reason != "") != c.backingOn {
			t.Errorf("%s: %+v, want due %s, attempt %d, backing off %v", c.name, d, c.due, c.attempt, c.backingOn)
		}
		if d.due(now) != !c.due.After(now) {
			t.Errorf("%s: due(now) = %v", c.name, d.due(now))
		}
	}
}

// TestDecideRetirement covers every branch of the one rule for retiring old keys.
func TestDecideRetirement(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	pol := Policy{DeactivateAfter: 10 * 24 * time.Hour, DeleteAfter: 5 * 24 * time.Hour}
	current := vault.Version{AccessKeyID: "AKIACURRENT", State: vault.StateCurrent, CurrentAt: now.Add(-3 * 24 * time.Hour)}
	versions := []vault.Version{
		{AccessKeyID: "AKIAINACTIVE", State: vault.StateInactive, InactiveAt: now.Add(-24 * time.Hour)},
		{AccessKeyID: "AKIAPREVIOUS", State: vault.StatePrevious},
		{AccessKeyID: "AKIADESTROYED", State: vault.StateDestroyed},
		{AccessKeyID: "AKIAPENDING", State: vault.StatePending},
		current,
	}
	got := decideRetirement(pol, &current, versions, nil)
	want := []retirementStep{
		{Next: NextDelete, Version: versions[0], Due: now.Add(4 * 24 * time.Hour)},
		{Next: NextDeactivate, Version: versions[1], Due: now.Add(7 * 24 * time.Hour)},
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v", got)
	}
	for i := range want {
		if got[i].Next != want[i].Next || got[i].Version.AccessKeyID != want[i].Version.AccessKeyID || !got[i].Due.Equal(want[i].Due) {
			t.Errorf("step %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	// Without a current version a previous key has nothing to wait for: it is not retired.
	if got := decideRetirement(pol, nil, versions[1:2], nil); len(got) != 0 {
		t.Errorf("a previous key with no current one: %+v", got)
	}
}
