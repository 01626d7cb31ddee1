package rotation

import (
	"fmt"
	"time"
)

// The scheduler's health is judged by progress, not by completion. A pass over a large estate can
// take far longer than rotation.interval (10,000 users at IAM's rate limits take hours): while it
// visits users it is healthy however long it runs. What is unhealthy is a scheduler that has
// stopped making progress — no pass started, no user visited, no pass finished for StallAfter —
// because Keyward is down, nobody leads, a call hangs or the database is away. Readiness to serve
// requests is a different question, and never depends on this (docs/DEPLOY.md, "Probes").

// Scheduler states, as GET /v1/status, keyward status and /healthz/rotation name them.
const (
	SchedulerRunning  = "running"   // a pass is under way and making progress
	SchedulerWaiting  = "waiting"   // between passes
	SchedulerStarting = "starting"  // no pass has started yet, within StallAfter of the start
	SchedulerStalled  = "stalled"   // no progress for StallAfter
	SchedulerUnlisted = "unlisted"  // the last pass could not list some accounts
	defaultStallFloor = time.Minute // a stall is never judged sooner than this after the last sign of life
)

// Passes is what is known of the scheduler's passes, whichever replica ran them.
type Passes struct {
	Interval time.Duration // rotation.interval
	// StallAfter is how long without progress makes the scheduler stalled (0: three intervals, at
	// least a minute).
	StallAfter time.Duration
	// Watching is when this process began watching (its start): a scheduler that never ran is not
	// judged stalled before Watching + StallAfter.
	Watching time.Time

	LastStarted, LastFinished time.Time // the last finished pass (zero: none)
	LastUnlisted              int       // accounts the last finished pass could not list
	Running                   *RunningPass
}

// RunningPass is a pass under way, as its leader last reported it.
type RunningPass struct {
	StartedAt  time.Time `json:"started_at"`
	ProgressAt time.Time `json:"progress_at"` // its start, or the last user visited
	Done       int       `json:"done"`
	Known      int       `json:"known"`
	By         string    `json:"by"`
}

// Health is the scheduler's state for people and probes.
type Health struct {
	State   string `json:"state"`
	Healthy bool   `json:"healthy"`
	// Reason says in a sentence why the state is what it is.
	Reason             string       `json:"reason"`
	LastPassStartedAt  *time.Time   `json:"last_pass_started_at,omitempty"`
	LastPassFinishedAt *time.Time   `json:"last_pass_finished_at,omitempty"`
	LastPassUnlisted   int          `json:"last_pass_unlisted,omitempty"`
	Pass               *RunningPass `json:"pass,omitempty"`
	LastProgressAt     *time.Time   `json:"last_progress_at,omitempty"`
	// NextPassDue is when the next pass should start (the last one's end and an interval).
	NextPassDue *time.Time `json:"next_pass_due,omitempty"`
	// LateSeconds is how far past NextPassDue the scheduler is while no new pass has finished: a
	// long pass is late without being unhealthy.
	LateSeconds       float64 `json:"late_seconds"`
	SinceProgressSecs float64 `json:"since_progress_seconds"`
	StallAfterSeconds float64 `json:"stall_after_seconds"`
	IntervalSeconds   float64 `json:"interval_seconds"`
}

// StallThreshold is StallAfter, or its default: three intervals, at least a minute.
func (p Passes) StallThreshold() time.Duration {
	if p.StallAfter > 0 {
		return p.StallAfter
	}
	return max(3*p.Interval, defaultStallFloor)
}

// Health judges the scheduler at now.
func (p Passes) Health(now time.Time) Health {
	stall := p.StallThreshold()
	h := Health{Pass: p.Running, LastPassUnlisted: p.LastUnlisted, StallAfterSeconds: stall.Seconds(),
		IntervalSeconds: p.Interval.Seconds()}
	if !p.LastStarted.IsZero() {
		h.LastPassStartedAt = &p.LastStarted
	}
	progress := p.LastFinished
	if !p.LastFinished.IsZero() {
		h.LastPassFinishedAt = &p.LastFinished
		due := p.LastFinished.Add(p.Interval)
		h.NextPassDue = &due
		h.LateSeconds = max(0, now.Sub(due)).Seconds()
	}
	if r := p.Running; r != nil && r.ProgressAt.After(progress) {
		progress = r.ProgressAt
	}
	if !progress.IsZero() {
		h.LastProgressAt = &progress
	}
	// A process that just started has not had the time to see progress.
	since, fresh := now.Sub(progress), p.Watching.After(progress)
	if fresh {
		since = now.Sub(p.Watching)
	}
	h.SinceProgressSecs = max(0, since).Seconds()
	switch {
	case since > stall:
		h.State = SchedulerStalled
		what := "no pass has started"
		if !progress.IsZero() {
			what = "no user visited and no pass started or finished"
		}
		h.Reason = fmt.Sprintf("%s for %s (stall_after %s): Keyward is down, no replica leads the scheduler, a call hangs, or the database is away",
			what, since.Round(time.Second), stall)
		if progress.IsZero() && p.Watching.IsZero() {
			h.Reason, h.SinceProgressSecs = "no pass has ever run on this database: start keyward serve (or rotate --once)", 0
		}
	case fresh:
		h.State, h.Healthy = SchedulerStarting, true
		h.Reason = fmt.Sprintf("this process started %s ago and has seen no progress since", since.Round(time.Second))
	case p.Running != nil:
		h.State, h.Healthy = SchedulerRunning, true
		h.Reason = fmt.Sprintf("a pass started %s ago has visited %d of %d users found so far, the last %s ago",
			now.Sub(p.Running.StartedAt).Round(time.Second), p.Running.Done, p.Running.Known, now.Sub(p.Running.ProgressAt).Round(time.Second))
	case p.LastUnlisted > 0:
		h.State = SchedulerUnlisted
		h.Reason = fmt.Sprintf("the last pass could not list %d account(s): keyward status and the log say why", p.LastUnlisted)
	default:
		h.State, h.Healthy = SchedulerWaiting, true
		h.Reason = fmt.Sprintf("the last pass finished %s ago", now.Sub(p.LastFinished).Round(time.Second))
	}
	return h
}
