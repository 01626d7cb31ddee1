package notify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Dispatcher delivers what the outbox holds, retrying with exponential backoff (30 s doubling, at
// most an hour) up to MaxAttempts, after which a delivery is dead and logged.
type Dispatcher struct {
	Outbox    Outbox
	Channels  map[string]Channel
	Templates *Templates
	Owner     string // this process, for claims
	// Gone, when set, names the processes known to be gone (replicas not seen for a lease): their
	// claims are taken over at once instead of when they run out.
	Gone        func() []string
	Log         *slog.Logger
	Now         func() time.Time
	Observe     func(channel, outcome string) // metrics: outcome sent, retry or dead
	MaxAttempts int
}

func (d *Dispatcher) now() time.Time {
	if d.Now != nil {
		return d.Now().UTC()
	}
	return time.Now().UTC()
}

func (d *Dispatcher) observe(channel, outcome string) {
	if d.Observe != nil {
		d.Observe(channel, outcome)
	}
}

// claimBatch and claimLease bound one round: a claim runs out if this process dies mid-round.
const (
	claimBatch = 50
	claimLease = 2 * time.Minute
)

// DeliverDue delivers every delivery that is due, and returns how many it sent.
func (d *Dispatcher) DeliverDue(ctx context.Context) (int, error) {
	sent := 0
	for {
		now := d.now()
		// Rounds run one at a time, and a round settles every delivery it claimed before it claims
		// more: a claim of this owner's found now is one whose outcome could not be written (the
		// database went away mid-round), taken again rather than left until it runs out.
		takeFrom := []string{d.Owner}
		if d.Gone != nil {
			takeFrom = append(takeFrom, d.Gone()...)
		}
		batch, err := d.Outbox.Claim(ctx, d.Owner, now, now.Add(claimLease), claimBatch, takeFrom...)
		if err != nil || len(batch) == 0 {
			return sent, err
		}
		for _, dl := range batch {
			ok, err := d.deliver(ctx, dl)
			if err != nil {
				return sent, err
			}
			if ok {
				sent++
			}
		}
		if len(batch) < claimBatch {
			return sent, nil
		}
	}
}

// deliver sends one delivery and records the outcome; the error is the outbox's, not the channel's.
func (d *Dispatcher) deliver(ctx context.Context, dl Delivery) (bool, error) {
	err := d.send(ctx, dl)
	if err == nil {
		d.observe(dl.Channel, "sent")
		return true, d.Outbox.Sent(ctx, dl.ID, d.now())
	}
	maxAttempts := d.MaxAttempts
	if maxAttempts == 0 {
		maxAttempts = defaultMaxAttempts
	}
	attempts := dl.Attempts + 1
	var perm *PermanentError
	if errors.As(err, &perm) || attempts >= maxAttempts {
		d.observe(dl.Channel, "dead")
		if d.Log != nil {
			d.Log.Error("notification given up", "channel", dl.Channel, "destination", dl.Destination, "event", dl.Notice.Event,
				"notice", dl.Notice.ID, "attempts", attempts, "error", err.Error())
		}
		return false, d.Outbox.Retry(ctx, dl.ID, short(err), time.Time{})
	}
	d.observe(dl.Channel, "retry")
	next := d.now().Add(retryDelay(attempts))
	if d.Log != nil {
		d.Log.Warn("notification not delivered, will retry", "channel", dl.Channel, "destination", dl.Destination,
			"event", dl.Notice.Event, "attempts", attempts, "next", next.Format(time.RFC3339), "error", err.Error())
	}
	return false, d.Outbox.Retry(ctx, dl.ID, short(err), next)
}

func (d *Dispatcher) send(ctx context.Context, dl Delivery) error {
	ch, ok := d.Channels[dl.Channel]
	if !ok {
		return &PermanentError{fmt.Errorf("channel %q is not configured", dl.Channel)}
	}
	msg, err := d.Templates.Render(dl.Notice)
	if err != nil {
		return &PermanentError{err}
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return ch.Send(ctx, dl, msg)
}

// Run delivers what is due every interval until ctx ends.
func (d *Dispatcher) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if _, err := d.DeliverDue(ctx); err != nil && ctx.Err() == nil && d.Log != nil {
			d.Log.Warn("notification outbox unreadable", "error", err.Error())
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
