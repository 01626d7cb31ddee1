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
// the last pass a leader finished, and the pass under way.
type Term struct {
	Name              string
	Holder            string
	Fence             int64
	Since             time.Time
	Expires           time.Time
	LastPassAt        time.Time // when it finished; zero: none yet
	LastPassStartedAt time.Time
	LastPassBy        string
	LastPassUnlisted  int      // accounts the last pass could not list
	Running           *Running // the pass under way, as its leader last reported it; nil: none
}

// Running is a pass under way: when it started, how far it has come, and when it last made
// progress (its start, or a user visited).
type Running struct {
	StartedAt  time.Time `json:"started_at"`
	ProgressAt time.Time `json:"progress_at"`
	Done       int       `json:"done"`  // users visited
	Known      int       `json:"known"` // users found so far (the listing goes on as they are visited)
	By         string    `json:"by"`
}

// PassReport is what a leader writes of its pass: its progress while it runs, then its end.
type PassReport struct {
	StartedAt   time.Time
	At          time.Time // of this report: the last progress, or the end
	Done, Known int
	Finished    bool
	Unlisted    int // accounts that could not be listed (a finished pass)
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
	// RecordPass writes a pass's progress or its end, only if holder still leads name in term
	// fence; false when not (a deposed leader).
	RecordPass(ctx context.Context, name, holder string, fence int64, r PassReport) (bool, error)
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
	StartedAt  time.Time `json:"started_at"`
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
		st.LastPass = &PassStatus{StartedAt: term.LastPassStartedAt, FinishedAt: term.LastPassAt, By: term.LastPassBy}
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

// RecordPass records the progress or the end of a pass of the leader of term fence; a deposed
// leader's is not recorded, and says so.
func (m *Member) RecordPass(ctx context.Context, fence int64, r PassReport) {
	ok, err := m.Store.RecordPass(ctx, Scheduler, m.ID, fence, r)
	switch {
	case err != nil:
		if ctx.Err() == nil {
			m.Log.Warn("pass not recorded", "finished", r.Finished, "error", err.Error())
		}
	case !ok:
		m.Log.Warn("pass reported after this replica stopped leading", "replica", m.ID, "fence", fence, "finished", r.Finished)
	}
}

// Scheduler returns the scheduler's term as the database holds it (ok false: nobody ever led).
func (m *Member) Scheduler(ctx context.Context) (Term, bool, error) {
	return m.Store.Term(ctx, Scheduler)
}

// Heartbeat reports the passes a leader runs in one term: the start and the end of each at once,
// its progress at most once an Every (Run writes it), so that every replica can tell a long pass
// that makes progress from a scheduler that has stopped.
type Heartbeat struct {
	m     *Member
	fence int64
	every time.Duration

	mu      sync.Mutex
	current *PassReport // the pass under way; nil between passes
	dirty   bool        // progress not written yet
	// writing orders the writes: a progress report read before the pass finished is written
	// before its end, never after (which would show the pass under way again).
	writing sync.Mutex
}

// Heartbeat returns the heartbeat of the term fence, writing progress every every (default: a
// third of the lease).
func (m *Member) Heartbeat(fence int64, every time.Duration) *Heartbeat {
	if every <= 0 {
		every = m.Lease / 3
	}
	return &Heartbeat{m: m, fence: fence, every: every}
}

// Started records that a pass started at at.
func (h *Heartbeat) Started(ctx context.Context, at time.Time) {
	r := PassReport{StartedAt: at, At: at}
	h.mu.Lock()
	h.current, h.dirty = &r, false
	h.mu.Unlock()
	h.writing.Lock()
	defer h.writing.Unlock()
	h.m.RecordPass(ctx, h.fence, r)
}

// Progress notes that the pass has visited done of the known users at at. It never waits for the
// database (the pass calls it under its own lock): Run writes it.
func (h *Heartbeat) Progress(at time.Time, done, known int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.current != nil {
		h.current.At, h.current.Done, h.current.Known = at, done, known
		h.dirty = true
	}
}

// Current returns the pass under way as last noted (ok false between passes).
func (h *Heartbeat) Current() (PassReport, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.current == nil {
		return PassReport{}, false
	}
	return *h.current, true
}

// Finished records the end of the pass that started at started.
func (h *Heartbeat) Finished(ctx context.Context, started, at time.Time, done, unlisted int) {
	h.mu.Lock()
	h.current, h.dirty = nil, false
	h.mu.Unlock()
	h.writing.Lock()
	defer h.writing.Unlock()
	h.m.RecordPass(ctx, h.fence, PassReport{StartedAt: started, At: at, Done: done, Known: done, Finished: true, Unlisted: unlisted})
}

// Run writes the pass's progress every Every while it changes, until ctx ends.
func (h *Heartbeat) Run(ctx context.Context) {
	t := time.NewTicker(h.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		h.writing.Lock()
		h.mu.Lock()
		var r PassReport
		write := h.current != nil && h.dirty
		if write {
			r, h.dirty = *h.current, false
		}
		h.mu.Unlock()
		if write {
			h.m.RecordPass(ctx, h.fence, r)
		}
		h.writing.Unlock()
	}
}
