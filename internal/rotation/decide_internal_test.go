package rotation

import (
	"testing"
	"time"
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
