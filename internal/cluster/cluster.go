// Package cluster lets several Keyward processes share one database. Each replica says every few
// seconds that it is alive; one at a time leads the jobs that must not run twice (the rotation
// scheduler and the audit trail's sinks) under a lease with a fence; and a replica not seen for a
// lease is gone, so that what it held is taken over instead of waited for.
package cluster

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Scheduler is the name of the rotation scheduler's leadership.
const Scheduler = "scheduler"

// Replica is one serve process sharing the database.
type Replica struct {
	ID        string    `json:"id"` // the engine's owner name: host/pid/nonce
	Version   string    `json:"version"`
	StartedAt time.Time `json:"started_at"`
	SeenAt    time.Time `json:"seen_at"`
}

// Term is a leadership as the database holds it: who leads, in which term (the fence), until when,
// and the last pass a leader finished.
type Term struct {
	Name       string
	Holder     string
	Fence      int64
	Since      time.Time
	Expires    time.Time
	LastPassAt time.Time // zero: none yet
	LastPassBy string
}

// Store keeps the replicas and the leaderships.
type Store interface {
	// Heartbeat writes that r is alive at r.SeenAt, and forgets replicas not seen since forgetBefore.
	Heartbeat(ctx context.Context, r Replica, forgetBefore time.Time) error
	// Leave removes a replica that stops.
	Leave(ctx context.Context, id string) error
	// Replicas lists the replicas, by id.
	Replicas(ctx context.Context) ([]Replica, error)
	// Lead makes holder the leader of name until until, when nobody leads it or the lease ran out
	// (before now), or renews holder's own lease. It returns the term's fence, which grows by one
	// each time the leadership changes hands; ok is false when another holder leads.
	Lead(ctx context.Context, name, holder string, now, until time.Time) (fence int64, ok bool, err error)
	// Resign ends holder's lease on name at once, so that another replica takes over without waiting.
	Resign(ctx context.Context, name, holder string) error
	// Term returns name's leadership, if anyone ever led it.
	Term(ctx context.Context, name string) (Term, bool, error)
	// PassFinished writes that a pass finished at at, only if holder still leads name in term
	// fence; false when not (a deposed leader).
	PassFinished(ctx context.Context, name, holder string, fence int64, at time.Time) (bool, error)
}

// Member is this process in the cluster. Its fields are set before Run.
type Member struct {
	Store   Store
	ID      string
	Version string
	// Lease is how long a silent replica keeps its leadership and its place (rotation.lease).
	Lease time.Duration
	Log   *slog.Logger
	Now   func() time.Time // nil: time.Now
	// HolderGone, when set, says whether a leader is known to be gone at once (a process of this
	// host that no longer exists): its lease is then ended instead of waited out, so that a restart
	// after a crash leads at once.
	HolderGone func(holder string) bool

	started time.Time
	mu      sync.Mutex
	seen    map[string]time.Time // replica → when last seen, as of the last heartbeat
	fence   int64                // the term this member leads, 0 when it does not
}

func (m *Member) now() time.Time {
	if m.Now != nil {
		return m.Now().UTC()
	}
	return time.Now().UTC()
}

// Run keeps the member alive in the cluster until ctx ends: a heartbeat every third of the lease,
// and a bid for the scheduler's leadership with it. While it leads, lead runs with a context that
// ends when the lease could not be renewed a third of a lease before it runs out (or ctx ends); it
// may run again in a later term. On the way out the member resigns and leaves, so that another
// replica leads at its next heartbeat.
func (m *Member) Run(ctx context.Context, lead func(ctx context.Context, fence int64)) {
	if m.Log == nil {
		m.Log = slog.New(slog.DiscardHandler)
	}
	m.started = m.now()
	tick := m.Lease / 3
	var (
		stopLead   func()
		validUntil time.Time
	)
	stop := func(why string) {
		if stopLead != nil {
			m.Log.Warn("no longer leading the scheduler", "replica", m.ID, "why", why)
			stopLead()
			stopLead = nil
			m.setFence(0)
		}
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		now := m.now()
		m.heartbeat(ctx, now)
		fence, ok, err := m.Store.Lead(ctx, Scheduler, m.ID, now, now.Add(m.Lease))
		if err == nil && !ok && m.deposeGone(ctx) {
			fence, ok, err = m.Store.Lead(ctx, Scheduler, m.ID, now, now.Add(m.Lease))
		}
		switch {
		case err == nil && ok:
			validUntil = now.Add(m.Lease)
			if stopLead != nil && fence != m.Fence() {
				stop("another term began") // cannot happen while the lease held, but a fence is a fence
			}
			if stopLead == nil {
				m.Log.Info("leading the scheduler", "replica", m.ID, "fence", fence)
				m.setFence(fence)
				lctx, cancel := context.WithCancel(ctx)
				done := make(chan struct{})
				go func() { defer close(done); lead(lctx, fence) }()
				stopLead = func() { cancel(); <-done }
			}
		case err == nil:
			stop("another replica leads")
		case ctx.Err() == nil:
			m.Log.Warn("cluster lease not renewed", "replica", m.ID, "error", err.Error())
			if !now.Add(tick).Before(validUntil) {
				stop("its lease could not be renewed")
			}
		}
		select {
		case <-ctx.Done():
			stop("shutting down")
			out, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			if err := m.Store.Resign(out, Scheduler, m.ID); err != nil {
				m.Log.Warn("scheduler not handed over", "error", err.Error())
			}
			if err := m.Store.Leave(out, m.ID); err != nil {
				m.Log.Warn("replica not removed from the cluster", "error", err.Error())
			}
			cancel()
			return
		case <-t.C:
		}
	}
}

// deposeGone ends the lease of a leader known to be gone, and says whether it did.
func (m *Member) deposeGone(ctx context.Context) bool {
	if m.HolderGone == nil {
		return false
	}
	term, ok, err := m.Store.Term(ctx, Scheduler)
	if err != nil || !ok || term.Holder == m.ID || !m.HolderGone(term.Holder) {
		return false
	}
	m.Log.Info("the scheduler's leader is gone: taking over without waiting for its lease", "leader", term.Holder)
	return m.Store.Resign(ctx, Scheduler, term.Holder) == nil
}

// heartbeat writes that the member is alive and reads who else is.
func (m *Member) heartbeat(ctx context.Context, now time.Time) {
	err := m.Store.Heartbeat(ctx, Replica{ID: m.ID, Version: m.Version, StartedAt: m.started, SeenAt: now}, now.Add(-24*time.Hour))
	if err != nil {
		if ctx.Err() == nil {
			m.Log.Warn("cluster heartbeat not written", "replica", m.ID, "error", err.Error())
		}
		return
	}
	rs, err := m.Store.Replicas(ctx)
	if err != nil {
		return
	}
	seen := make(map[string]time.Time, len(rs))
	for _, r := range rs {
		seen[r.ID] = r.SeenAt
	}
	m.mu.Lock()
	m.seen = seen
	m.mu.Unlock()
}

func (m *Member) setFence(f int64) { m.mu.Lock(); m.fence = f; m.mu.Unlock() }

// Fence returns the term this member leads, 0 when it does not lead.
func (m *Member) Fence() int64 { m.mu.Lock(); defer m.mu.Unlock(); return m.fence }

// Gone says whether the replica named owner was last seen more than a lease ago (as of this
// member's last heartbeat): it crashed or lost the database, and whatever it held may be taken
// over. A name that is no replica (a CLI process) is not known to be gone.
func (m *Member) Gone(owner string) bool {
	m.mu.Lock()
	seen, ok := m.seen[owner]
	m.mu.Unlock()
	return ok && !m.Alive(seen)
}

// GoneReplicas names the replicas last seen more than a lease ago (as of the last heartbeat).
func (m *Member) GoneReplicas() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var gone []string
	for id, seen := range m.seen {
		if !m.Alive(seen) {
			gone = append(gone, id)
		}
	}
	return gone
}

// Alive says whether a replica seen at seen counts as alive now, for status pages.
func (m *Member) Alive(seen time.Time) bool { return m.now().Sub(seen) <= m.Lease }

// Status is the cluster as one replica sees it, for GET /v1/status.
type Status struct {
	Replica  string        `json:"replica"` // the replica that answers
	Leader   *LeaderStatus `json:"leader"`  // nil: nobody leads
	LastPass *PassStatus   `json:"last_pass"`
	Replicas []ReplicaView `json:"replicas"`
}

// LeaderStatus is who runs the scheduler.
type LeaderStatus struct {
	Replica      string    `json:"replica"`
	Fence        int64     `json:"fence"`
	Since        time.Time `json:"since"`
	LeaseExpires time.Time `json:"lease_expires"`
}

// PassStatus is the last pass a leader finished.
type PassStatus struct {
	FinishedAt time.Time `json:"finished_at"`
	By         string    `json:"by"`
}

// ReplicaView is a replica and whether it counts as alive.
type ReplicaView struct {
	Replica
	Alive bool `json:"alive"`
}

// Status reads the cluster's state from the database.
func (m *Member) Status(ctx context.Context) (Status, error) {
	st := Status{Replica: m.ID, Replicas: []ReplicaView{}}
	term, ok, err := m.Store.Term(ctx, Scheduler)
	if err != nil {
		return st, err
	}
	if ok && term.Expires.After(m.now()) {
		st.Leader = &LeaderStatus{Replica: term.Holder, Fence: term.Fence, Since: term.Since, LeaseExpires: term.Expires}
	}
	if ok && !term.LastPassAt.IsZero() {
		st.LastPass = &PassStatus{FinishedAt: term.LastPassAt, By: term.LastPassBy}
	}
	rs, err := m.Store.Replicas(ctx)
	if err != nil {
		return st, err
	}
	for _, r := range rs {
		st.Replicas = append(st.Replicas, ReplicaView{Replica: r, Alive: m.Alive(r.SeenAt)})
	}
	return st, nil
}

// PassFinished records a pass the leader of term fence finished at at; a deposed leader's is not
// recorded, and says so.
func (m *Member) PassFinished(ctx context.Context, fence int64, at time.Time) {
	ok, err := m.Store.PassFinished(ctx, Scheduler, m.ID, fence, at)
	switch {
	case err != nil:
		m.Log.Warn("pass not recorded", "error", err.Error())
	case !ok:
		m.Log.Warn("pass finished after this replica stopped leading", "replica", m.ID, "fence", fence)
	}
}

// LastPass returns when the cluster's last pass finished (zero: none yet).
func (m *Member) LastPass(ctx context.Context) (time.Time, error) {
	term, _, err := m.Store.Term(ctx, Scheduler)
	return term.LastPassAt, err
}
