package groupcommit_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/store/groupcommit"
)

// store is an in-memory database with savepoints: what commits is appended to its log.
type store struct {
	mu        sync.Mutex
	committed []string
	commits   atomic.Int64
}

// tx is a transaction of store: pending work, savepoint marks, and memory that follows savepoints.
type tx struct {
	s       *store
	pending []string
	marks   []int
	memory  []string // domain state kept for the transaction's length
	hooks   []func(context.Context)
	number  int64 // which commit it was
}

func (t *tx) Exec(_ context.Context, stmt string) error {
	switch {
	case strings.HasPrefix(stmt, "SAVEPOINT"):
		t.marks = append(t.marks, len(t.pending))
	case strings.HasPrefix(stmt, "ROLLBACK TO"):
		t.pending = t.pending[:t.marks[len(t.marks)-1]]
	case strings.HasPrefix(stmt, "RELEASE"):
		t.marks = t.marks[:len(t.marks)-1]
	default:
		return fmt.Errorf("unknown statement %q", stmt)
	}
	return nil
}

func (t *tx) Commit(context.Context) error {
	t.s.mu.Lock()
	defer t.s.mu.Unlock()
	t.s.committed = append(t.s.committed, t.pending...)
	t.number = t.s.commits.Add(1)
	return nil
}

func (t *tx) Rollback(context.Context) { t.pending = nil }

func (t *tx) Snapshot() func() {
	memory, hooks := slices.Clone(t.memory), len(t.hooks)
	return func() { t.memory, t.hooks = memory, t.hooks[:hooks] }
}

func (t *tx) AfterCommit() []func(context.Context) { return t.hooks }

func (s *store) begin(context.Context) (*tx, error) { return &tx{s: s}, nil }

// work writes name, remembers it in the transaction's memory, leaves a hook, and fails if told to.
func work(name string, fail bool, ran *[]string, mu *sync.Mutex) func(*tx) error {
	return func(t *tx) error {
		t.pending = append(t.pending, name)
		t.memory = append(t.memory, name)
		t.hooks = append(t.hooks, func(context.Context) { mu.Lock(); *ran = append(*ran, name); mu.Unlock() })
		if fail {
			return errors.New(name + " refused")
		}
		return nil
	}
}

// TestMembersAreAllOrNothing: in one group, a member whose work fails has its writes, its memory and
// its hooks undone, and hears its own error; the others commit, and their hooks run once durable.
func TestMembersAreAllOrNothing(t *testing.T) {
	s := &store{}
	var ran []string
	var mu sync.Mutex
	a := groupcommit.NewWrite(work("a", false, &ran, &mu))
	b := groupcommit.NewWrite(work("b", true, &ran, &mu))
	c := groupcommit.NewWrite(work("c", false, &ran, &mu))
	var in *tx
	done, began := groupcommit.WriteGroup(context.Background(), func(ctx context.Context) (*tx, error) {
		t, err := s.begin(ctx)
		in = t
		return t, err
	}, []*groupcommit.Write[*tx]{a, b, c}, nil)
	if !began || done.Empty() {
		t.Fatalf("began %v, empty %v", began, done.Empty())
	}
	if err := b.Wait(); err == nil || err.Error() != "b refused" {
		t.Fatalf("b heard %v", err)
	}
	if fmt.Sprint(s.committed) != "[a c]" || fmt.Sprint(in.memory) != "[a c]" {
		t.Fatalf("committed %v, memory %v", s.committed, in.memory)
	}
	done.Finish(context.Background(), nil)
	if a.Wait() != nil || c.Wait() != nil || fmt.Sprint(ran) != "[a c]" {
		t.Fatalf("hooks ran %v", ran)
	}
}

// TestPanicAbandonsTheGroup: a member's panic rolls the transaction back, the others hear
// ErrPanicked, and the panic goes on.
func TestPanicAbandonsTheGroup(t *testing.T) {
	s := &store{}
	a := groupcommit.NewWrite(func(t *tx) error { t.pending = append(t.pending, "a"); return nil })
	b := groupcommit.NewWrite(func(*tx) error { panic("boom") })
	func() {
		defer func() {
			if r := recover(); r != "boom" {
				t.Fatalf("recovered %v", r)
			}
		}()
		groupcommit.WriteGroup(context.Background(), s.begin, []*groupcommit.Write[*tx]{a, b}, nil)
	}()
	if err := a.Wait(); !errors.Is(err, groupcommit.ErrPanicked) || len(s.committed) != 0 {
		t.Fatalf("a heard %v; committed %v", err, s.committed)
	}
}

// TestCommitterSharesSyncs: many concurrent writers behind a slow sync share commits and syncs, and
// none hears of its write before the sync that covers it is done.
func TestCommitterSharesSyncs(t *testing.T) {
	s := &store{}
	var syncs, syncedCommits atomic.Int64
	c := &groupcommit.Committer[*tx]{
		Write: func(group []*groupcommit.Write[*tx], more func() []*groupcommit.Write[*tx]) groupcommit.Committed[*tx] {
			done, _ := groupcommit.WriteGroup(context.Background(), s.begin, group, more)
			return done
		},
		Sync: func() error {
			time.Sleep(5 * time.Millisecond)
			syncs.Add(1)
			syncedCommits.Store(s.commits.Load())
			return nil
		},
	}
	const writers, each = 8, 20
	var wg sync.WaitGroup
	var early atomic.Int64
	for i := range writers {
		wg.Go(func() {
			for j := range each {
				name := fmt.Sprintf("w%d-%d", i, j)
				var in *tx
				w := groupcommit.NewWrite(func(t *tx) error {
					t.pending, in = append(t.pending, name), t
					return nil
				})
				if err := c.Do(w); err != nil {
					t.Error(err)
				}
				if in.number > syncedCommits.Load() { // its commit came after the last sync
					early.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if got := len(s.committed); got != writers*each {
		t.Fatalf("%d writes committed, want %d", got, writers*each)
	}
	if early.Load() != 0 {
		t.Fatalf("%d writers heard of their write before its sync", early.Load())
	}
	if n := syncs.Load(); n >= writers*each {
		t.Fatalf("%d syncs for %d writes: none shared", n, writers*each)
	}
	t.Logf("%d writes, %d commits, %d syncs", writers*each, s.commits.Load(), syncs.Load())
}
