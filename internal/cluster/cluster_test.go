package cluster_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/cluster"
	"github.com/keyward/keyward/internal/store/storetest"
	"github.com/keyward/keyward/internal/testenv"
)

// TestLeaseAndFence: the store's leadership on both databases — one holder at a time, the fence
// growing with each change of hands, a deposed leader's pass refused, a resignation handing over at
// once, and of ten replicas bidding at once exactly one leading.
func TestLeaseAndFence(t *testing.T) {
	testenv.ForEachDatabase(t, func(t *testing.T, d testenv.Database) {
		ctx := context.Background()
		st := storetest.Open(t, d).Cluster()
		t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
		lead := func(holder string, at time.Time) (int64, bool) {
			t.Helper()
			f, ok, err := st.Lead(ctx, cluster.Scheduler, holder, at, at.Add(30*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			return f, ok
		}
		if f, ok := lead("a", t0); !ok || f != 1 {
			t.Fatalf("first bid: %d %v", f, ok)
		}
		if _, ok := lead("b", t0.Add(10*time.Second)); ok {
			t.Fatal("b led while a's lease held")
		}
		if f, ok := lead("a", t0.Add(20*time.Second)); !ok || f != 1 {
			t.Fatalf("a's renewal: %d %v", f, ok)
		}
		if f, ok := lead("b", t0.Add(51*time.Second)); !ok || f != 2 { // a's lease ran out at 50 s
			t.Fatalf("b after a's lease ran out: %d %v", f, ok)
		}
		if _, ok := lead("a", t0.Add(52*time.Second)); ok {
			t.Fatal("the deposed leader renewed")
		}
		if ok, err := st.RecordPass(ctx, cluster.Scheduler, "a", 1, finished(t0.Add(53*time.Second))); err != nil || ok {
			t.Fatalf("a pass by the deposed leader was recorded: %v %v", ok, err)
		}
		if ok, err := st.RecordPass(ctx, cluster.Scheduler, "b", 2, finished(t0.Add(54*time.Second))); err != nil || !ok {
			t.Fatalf("the leader's pass: %v %v", ok, err)
		}
		term, ok, err := st.Term(ctx, cluster.Scheduler)
		if err != nil || !ok || term.Holder != "b" || term.Fence != 2 || !term.LastPassAt.Equal(t0.Add(54*time.Second)) || term.LastPassBy != "b" {
			t.Fatalf("term: %+v %v %v", term, ok, err)
		}
		if err := st.Resign(ctx, cluster.Scheduler, "b"); err != nil {
			t.Fatal(err)
		}
		if f, ok := lead("c", t0.Add(55*time.Second)); !ok || f != 3 {
			t.Fatalf("c after b resigned: %d %v", f, ok)
		}

		// Ten bids at once for a lease that ran out: one wins.
		var wg sync.WaitGroup
		var won atomic.Int32
		at := t0.Add(time.Hour)
		for i := range 10 {
			wg.Go(func() {
				_, ok, err := st.Lead(ctx, cluster.Scheduler, string(rune('k'+i)), at, at.Add(30*time.Second))
				if err != nil {
					t.Error(err)
				}
				if ok {
					won.Add(1)
				}
			})
		}
		wg.Wait()
		if won.Load() != 1 {
			t.Fatalf("%d replicas lead at once", won.Load())
		}

		// Heartbeats: a replica not seen for a day is forgotten.
		for _, r := range []cluster.Replica{{ID: "old", StartedAt: t0, SeenAt: t0}, {ID: "new", StartedAt: t0, SeenAt: t0.Add(25 * time.Hour)}} {
			if err := st.Heartbeat(ctx, r, r.SeenAt.Add(-24*time.Hour)); err != nil {
				t.Fatal(err)
			}
		}
		rs, err := st.Replicas(ctx)
		if err != nil || len(rs) != 1 || rs[0].ID != "new" {
			t.Fatalf("replicas: %+v %v", rs, err)
		}
	})
}

// cut is a Store that can be cut off from the database, as a replica that lost its network.
type cut struct {
	cluster.Store
	off atomic.Bool
}

var errCut = errors.New("database unreachable")

func (c *cut) Heartbeat(ctx context.Context, r cluster.Replica, before time.Time) error {
	if c.off.Load() {
		return errCut
	}
	return c.Store.Heartbeat(ctx, r, before)
}

func (c *cut) Lead(ctx context.Context, name, holder string, now, until time.Time) (int64, bool, error) {
	if c.off.Load() {
		return 0, false, errCut
	}
	return c.Store.Lead(ctx, name, holder, now, until)
}

// TestMembersHandOver runs two members on one database: one leads; cut off from the database, it
// stops leading before its lease runs out and the other takes over in the next term and sees it
// gone; a member that shuts down hands over at once.
func TestMembersHandOver(t *testing.T) {
	testenv.ForEachDatabase(t, func(t *testing.T, d testenv.Database) {
		db := storetest.Open(t, d)
		const lease = 600 * time.Millisecond
		type leader struct {
			id    string
			fence int64
		}
		events := make(chan leader, 10)
		var ended sync.Map // id → when its lead ended
		run := func(m *cluster.Member) (stop func()) {
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() {
				defer close(done)
				m.Run(ctx, func(ctx context.Context, fence int64) {
					events <- leader{m.ID, fence}
					<-ctx.Done()
					ended.Store(m.ID, time.Now())
				})
			}()
			return func() { cancel(); <-done }
		}
		a := &cluster.Member{Store: &cut{Store: db.Cluster()}, ID: "a", Lease: lease}
		stopA := run(a)
		defer stopA()
		first := <-events
		if first != (leader{"a", 1}) {
			t.Fatalf("first leader: %+v", first)
		}
		b := &cluster.Member{Store: db.Cluster(), ID: "b", Lease: lease}
		stopB := run(b)
		select {
		case l := <-events:
			t.Fatalf("%+v leads while a's lease holds", l)
		case <-time.After(lease):
		}
		cutAt := time.Now()
		a.Store.(*cut).off.Store(true)
		next := <-events
		if next != (leader{"b", 2}) {
			t.Fatalf("after a was cut off: %+v", next)
		}
		if _, ok := ended.Load("a"); !ok {
			t.Fatal("b leads and a still leads")
		}
		if took := time.Since(cutAt); took > 3*lease {
			t.Fatalf("the take-over took %s with a lease of %s", took, lease)
		}
		for deadline := time.Now().Add(2 * lease); !b.Gone("a") && time.Now().Before(deadline); { // as of b's last heartbeat
			time.Sleep(lease / 10)
		}
		if !b.Gone("a") || b.Gone("b") {
			t.Fatalf("b's view: a gone %v, b gone %v", b.Gone("a"), b.Gone("b"))
		}
		// a comes back as a follower; b shuts down and hands over without waiting out its lease.
		a.Store.(*cut).off.Store(false)
		handed := time.Now()
		stopB()
		again := <-events
		if again.id != "a" || again.fence != 3 || time.Since(handed) > lease {
			t.Fatalf("after b shut down: %+v in %s", again, time.Since(handed))
		}
	})
}

func finished(at time.Time) cluster.PassReport {
	return cluster.PassReport{StartedAt: at.Add(-time.Second), At: at, Finished: true}
}

// TestPassProgressIsShared: the leader's heartbeat writes a pass's start, its progress (at most
// every Every, and never after the pass's end) and its end where every replica reads them; a
// deposed leader's progress is refused. Both databases.
func TestPassProgressIsShared(t *testing.T) {
	testenv.ForEachDatabase(t, func(t *testing.T, d testenv.Database) {
		ctx := context.Background()
		st := storetest.Open(t, d).Cluster()
		now := time.Now().UTC().Truncate(time.Microsecond)
		if _, ok, err := st.Lead(ctx, cluster.Scheduler, "a", now, now.Add(time.Hour)); err != nil || !ok {
			t.Fatal(ok, err)
		}
		a := &cluster.Member{Store: st, ID: "a", Lease: time.Hour}
		hb := a.Heartbeat(1, 20*time.Millisecond)
		hctx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); hb.Run(hctx) }()
		defer func() { stop(); <-done }()

		term := func() cluster.Term {
			t.Helper()
			term, ok, err := a.Scheduler(ctx)
			if err != nil || !ok {
				t.Fatal(ok, err)
			}
			return term
		}
		hb.Started(ctx, now)
		if r := term().Running; r == nil || !r.StartedAt.Equal(now) || r.Done != 0 || r.By != "a" {
			t.Fatalf("after the start: %+v", r)
		}
		hb.Progress(now.Add(time.Second), 3, 10)
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			if r := term().Running; r != nil && r.Done == 3 && r.Known == 10 && r.ProgressAt.Equal(now.Add(time.Second)) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("progress not written: %+v", term().Running)
			}
		}
		hb.Progress(now.Add(2*time.Second), 4, 10)
		hb.Finished(ctx, now, now.Add(3*time.Second), 10, 2)
		time.Sleep(100 * time.Millisecond) // several of Run's ticks: none may write the pass under way again
		got := term()
		if got.Running != nil || !got.LastPassStartedAt.Equal(now) || !got.LastPassAt.Equal(now.Add(3*time.Second)) ||
			got.LastPassUnlisted != 2 || got.LastPassBy != "a" {
			t.Fatalf("after the end: %+v running %+v", got, got.Running)
		}
		// Another term: a's reports are refused.
		if ok, err := st.RecordPass(ctx, cluster.Scheduler, "b", 1, cluster.PassReport{StartedAt: now, At: now}); err != nil || ok {
			t.Fatalf("a pass of a replica that does not lead was recorded: %v %v", ok, err)
		}
	})
}
