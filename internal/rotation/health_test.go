package rotation_test

import (
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/rotation"
)

// TestSchedulerHealthIsProgress: a pass much longer than three intervals that keeps visiting users
// is healthy (and late); a scheduler with no progress for StallAfter is stalled, whether a pass hangs,
// none started after the last, or none ever began; a process that just started is not judged yet.
func TestSchedulerHealthIsProgress(t *testing.T) {
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	ago := func(d time.Duration) time.Time { return now.Add(-d) }
	const interval = 3 * time.Second
	cases := []struct {
		name      string
		p         rotation.Passes
		state     string
		healthy   bool
		late      float64
		reasonHas string
	}{
		{name: "a 54 s pass still visiting users", state: rotation.SchedulerRunning, healthy: true, late: 51,
			p: rotation.Passes{LastStarted: ago(60 * time.Second), LastFinished: ago(54 * time.Second),
				Running: &rotation.RunningPass{StartedAt: ago(54 * time.Second), ProgressAt: ago(time.Second), Done: 40, Known: 60}},
			reasonHas: "visited 40 of 60"},
		{name: "a pass whose progress stopped", state: rotation.SchedulerStalled, late: 597,
			p: rotation.Passes{LastFinished: ago(10 * time.Minute),
				Running: &rotation.RunningPass{StartedAt: ago(9 * time.Minute), ProgressAt: ago(2 * time.Minute), Done: 3, Known: 60}},
			reasonHas: "no user visited"},
		{name: "between passes", state: rotation.SchedulerWaiting, healthy: true, p: rotation.Passes{LastFinished: ago(2 * time.Second)}},
		{name: "no pass after the last for long", state: rotation.SchedulerStalled, late: 117,
			p: rotation.Passes{LastFinished: ago(2 * time.Minute)}},
		{name: "just started", state: rotation.SchedulerStarting, healthy: true, p: rotation.Passes{Watching: ago(10 * time.Second)}},
		{name: "never started", state: rotation.SchedulerStalled, p: rotation.Passes{Watching: ago(2 * time.Minute)},
			reasonHas: "no pass has started"},
		{name: "a restart after a long silence is not judged at once", state: rotation.SchedulerStarting, healthy: true,
			p:    rotation.Passes{Watching: ago(time.Second), LastFinished: ago(time.Hour), Running: &rotation.RunningPass{StartedAt: ago(time.Hour), ProgressAt: ago(time.Hour)}},
			late: 3597},
		{name: "the last pass could not list", state: rotation.SchedulerUnlisted, p: rotation.Passes{LastFinished: ago(time.Second), LastUnlisted: 1}},
		{name: "an explicit stall_after", state: rotation.SchedulerStalled,
			p: rotation.Passes{StallAfter: 5 * time.Second, LastFinished: ago(10 * time.Second),
				Running: &rotation.RunningPass{StartedAt: ago(9 * time.Second), ProgressAt: ago(6 * time.Second)}}, late: 7},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.p.Interval = interval
			h := c.p.Health(now)
			if h.State != c.state || h.Healthy != c.healthy || h.LateSeconds != c.late || !strings.Contains(h.Reason, c.reasonHas) {
				t.Fatalf("health = %+v, want state %s healthy %v late %v reason with %q", h, c.state, c.healthy, c.late, c.reasonHas)
			}
		})
	}
}

// TestSummaryCountsEveryKeyRetired (issue 30 §7): a visit that deletes a retired key to make room
// and then rotates counts one rotation and one deletion (the trail's key.deleted), not only its
// outcome; a planned deletion (no actions yet) counts its key.
func TestSummaryCountsEveryKeyRetired(t *testing.T) {
	var s rotation.Summary
	s.Add(rotation.Result{Outcome: rotation.Rotated, Actions: []rotation.Action{{Kind: rotation.KindDeleted, KeyID: "AKIAOLD"},
		{Kind: rotation.KindCreated, KeyID: "AKIANEW"}, {Kind: rotation.KindPromoted, KeyID: "AKIANEW"}}})
	s.Add(rotation.Result{Outcome: rotation.Deactivated, Actions: []rotation.Action{{Kind: rotation.KindDeactivated, KeyID: "AKIAPREV"}}})
	s.Add(rotation.Result{Outcome: rotation.Deleted}) // a plan's
	if s != (rotation.Summary{Scanned: 3, Rotated: 1, Deactivated: 1, Deleted: 2}) {
		t.Fatalf("summary %+v", s)
	}
}
