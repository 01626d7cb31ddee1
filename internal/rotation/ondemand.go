package rotation

import (
	"context"
	"errors"
	"sync"
	"time"
)

// ErrTooMany: the on-demand runner has no place free for another rotation now.
var ErrTooMany = errors.New("too many rotations under way")

// OnDemand runs the rotations asked for now (the API's POST /rotate) in the background: at most a
// limit at once, each within a deadline, all under one context that Stop cancels before it waits
// for them, so that shutdown never closes the database under a rotation. A rotation cut short by
// Stop or its deadline is resumed from its records by the next visit of its user, as after a crash.
type OnDemand struct {
	slots    chan struct{}
	deadline time.Duration
	ctx      context.Context
	cancel   context.CancelFunc
	mu       sync.Mutex
	wg       sync.WaitGroup
	stopped  bool
}

// NewOnDemand returns a runner of at most limit rotations at once (at least one), each cut off
// after deadline.
func NewOnDemand(limit int, deadline time.Duration) *OnDemand {
	ctx, cancel := context.WithCancel(context.Background())
	return &OnDemand{slots: make(chan struct{}, max(limit, 1)), deadline: deadline, ctx: ctx, cancel: cancel}
}

// Go runs fn in the background under the runner's context and deadline once a place is free,
// waiting for one at most wait; ErrTooMany when none comes, or once the runner is stopped.
func (o *OnDemand) Go(wait time.Duration, fn func(ctx context.Context)) error {
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case o.slots <- struct{}{}:
	case <-t.C:
		return ErrTooMany
	case <-o.ctx.Done():
		return ErrTooMany
	}
	o.mu.Lock()
	if o.stopped {
		o.mu.Unlock()
		<-o.slots
		return ErrTooMany
	}
	o.wg.Add(1)
	o.mu.Unlock()
	go func() {
		defer o.wg.Done()
		defer func() { <-o.slots }()
		ctx, cancel := context.WithTimeout(o.ctx, o.deadline)
		defer cancel()
		fn(ctx)
	}()
	return nil
}

// Stop cancels the rotations under way and waits until they have returned; Go refuses from then on.
func (o *OnDemand) Stop() {
	o.mu.Lock()
	o.stopped = true
	o.mu.Unlock()
	o.cancel()
	o.wg.Wait()
}
