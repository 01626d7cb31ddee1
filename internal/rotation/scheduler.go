package rotation

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/keyward/keyward/internal/backoff"
)

// PassEvents are told of the scheduler's passes as they go; each may be nil. They are its
// heartbeat: a pass under way reports each user it visits, so that a long pass is seen to make
// progress (Passes.Health).
type PassEvents struct {
	Started  func(at time.Time)
	Progress func(at time.Time, done, known int)
	Finished func(started, at time.Time, rep Report, err error)
}

// Schedule runs a pass, waits Interval (±10% jitter, so that replicas and accounts do not fall into
// step), and again, until ctx ends. One pass at a time; each is bounded by opts.Concurrency. A pass
// cut short by ctx is abandoned safely: its rotations resume from their records at the next start.
func (e *Engine) Schedule(ctx context.Context, interval time.Duration, opts PassOptions, ev PassEvents) {
	failures := 0 // passes in a row cut short, unable to list, or with visits interrupted (the database away)
	if ev.Progress != nil {
		opts.Progress = func(done, known int) { ev.Progress(e.now(), done, known) }
	}
	for {
		start := e.now()
		if ev.Started != nil {
			ev.Started(start)
		}
		rep, err := e.Pass(ctx, opts)
		if ctx.Err() != nil {
			return
		}
		e.Log.Info("pass finished", "duration", e.now().Sub(start).String(), "scanned", rep.Summary.Scanned,
			"rotated", rep.Summary.Rotated, "deactivated", rep.Summary.Deactivated, "deleted", rep.Summary.Deleted,
			"held", rep.Summary.Held, "blocked", rep.Summary.Blocked, "failed", rep.Summary.Failed)
		for _, msg := range rep.Errors {
			e.Log.Warn("pass could not list", "error", msg)
		}
		if err != nil && !errors.Is(err, context.Canceled) {
			e.Log.Error("pass stopped", "error", err)
		}
		if ev.Finished != nil {
			ev.Finished(start, e.now(), rep, err)
		}
		wait := time.Duration(float64(interval) * (0.9 + 0.2*rand.Float64()))
		// A pass that could not finish is tried again soon, and less soon each time it fails again,
		// rather than an interval later: the database or the cloud coming back resumes it.
		if (err != nil && !errors.Is(err, context.Canceled)) || len(rep.Errors) > 0 || rep.Interrupted > 0 {
			failures++
			wait = min(wait, backoff.Exponential(e.PassRetry, interval, failures))
		} else {
			failures = 0
		}
		if err := e.Sleep(ctx, wait); err != nil {
			return
		}
	}
}
