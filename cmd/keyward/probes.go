package main

import (
	"context"
	"errors"
	"time"

	"github.com/keyward/keyward/internal/cluster"
	"github.com/keyward/keyward/internal/httpapi"
	"github.com/keyward/keyward/internal/rotation"
	"github.com/keyward/keyward/internal/store"
)

// Probes (docs/DEPLOY.md, "Probes"): /readyz answers whether this replica can serve requests now —
// the database answers and is migrated, tokens can be signed — and nothing else, so that a long pass
// never takes the API out of service. The rotation's health is judged by rotation.Passes from what
// the leader writes of its passes (cluster.Heartbeat), the same on every replica, and served on
// /healthz/rotation, GET /v1/status and keyward status.

// databaseCheck is the readiness condition on the database: it answers (reason database) and its
// schema is the one this binary needs (reason migrations).
func databaseCheck(db *store.DB) func(context.Context) error {
	return func(ctx context.Context) error {
		err := db.Ready(ctx)
		switch {
		case errors.Is(err, store.ErrNotMigrated):
			return &httpapi.NotReady{Reason: "migrations", Err: err}
		case err != nil:
			return &httpapi.NotReady{Reason: "database", Err: err}
		}
		return nil
	}
}

// signingKeyCheck is the readiness condition on the token signing key: it is opened (a KEK out of
// reach makes sign-ins fail).
func signingKeyCheck(ready func(context.Context) error) func(context.Context) error {
	return func(ctx context.Context) error {
		if err := ready(ctx); err != nil {
			return &httpapi.NotReady{Reason: "signing_key", Err: err}
		}
		return nil
	}
}

// schedulerHealth judges the scheduler from its term as the database holds it; watching is when
// this process began watching (zero for a command that does not run the scheduler).
func (a *app) schedulerHealth(read func(context.Context) (cluster.Term, bool, error), watching time.Time) func(context.Context) (rotation.Health, error) {
	return func(ctx context.Context) (rotation.Health, error) {
		term, _, err := read(ctx)
		if err != nil {
			return rotation.Health{}, err
		}
		p := rotation.Passes{Interval: a.cfg.Rotation.Interval.Std(), StallAfter: a.cfg.Rotation.StallAfter.Std(), Watching: watching,
			LastStarted: term.LastPassStartedAt, LastFinished: term.LastPassAt, LastUnlisted: term.LastPassUnlisted}
		if r := term.Running; r != nil {
			p.Running = &rotation.RunningPass{StartedAt: r.StartedAt, ProgressAt: r.ProgressAt, Done: r.Done, Known: r.Known, By: r.By}
		}
		return p.Health(time.Now()), nil
	}
}

// schedulerCheck is the rotation probe's condition on the scheduler: making progress (reason
// scheduler_stalled) and able to list the cloud's users (cloud_unavailable).
func schedulerCheck(health func(context.Context) (rotation.Health, error)) func(context.Context) error {
	return func(ctx context.Context) error {
		h, err := health(ctx)
		switch {
		case err != nil:
			return &httpapi.NotReady{Reason: "database", Err: err}
		case h.State == rotation.SchedulerStalled:
			return &httpapi.NotReady{Reason: "scheduler_stalled", Err: errors.New(h.Reason)}
		case h.State == rotation.SchedulerUnlisted:
			return &httpapi.NotReady{Reason: "cloud_unavailable", Err: errors.New(h.Reason)}
		}
		return nil
	}
}
