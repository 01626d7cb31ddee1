// Package groupcommit writes the durable transactions of one process's concurrent callers in groups:
// whoever gets the write lock next writes every queued caller's work in one transaction, each in its
// own savepoint, with one commit — and one fsync — for all of them.
//
// Why: SQLite admits one writer at a time and every durable commit costs an fsync of its log, which
// on the machines Keyward runs on takes longer than the SQL of a write; a writer that finds the lock
// taken sleeps in SQLite's busy handler (1, 2, 5, 10… ms) before it looks again. Queued here instead,
// eight concurrent writers pay for about one fsync each group rather than eight (docs/BENCHMARKS.md:
// a Put under eight writers costs 0.4–0.6 of one fsync, a lone one about 1.5).
//
// The contract, for the store that uses it:
//   - A caller's work (Write) is all or nothing: a member whose work fails has its savepoint rolled
//     back, and whatever it left in the transaction's memory restored (Tx.Snapshot), not the others'.
//   - No caller returns before its own work is durable (committed and synced) or undone; a commit
//     whose sync fails is reported as not known to be durable.
//   - The sync is made outside the write lock: the group's writer lets the lock go, syncs (Sync),
//     and only then answers its members. Meanwhile the next writer runs its group's work and takes
//     in whoever queues (more) until that sync is done; then it commits. So the disk's time overlaps
//     the next group's work, and there is still one commit per sync. A commit may be seen by a reader
//     one sync before it is durable; no caller hears of it before.
//   - A member whose work panics: the transaction is rolled back, the other members hear
//     ErrPanicked, and the panic goes on in the goroutine that wrote the group.
//   - A statement that loses the whole transaction (SQLite rolls everything back when one is
//     interrupted) answers every member ErrTxLost: nobody's work is in it.
package groupcommit

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// Tx is the transaction a group is written in.
type Tx interface {
	// Exec runs a savepoint statement (SAVEPOINT, ROLLBACK TO, RELEASE).
	Exec(ctx context.Context, statement string) error
	Commit(ctx context.Context) error
	// Rollback rolls the transaction back; one already rolled back is no error.
	Rollback(ctx context.Context)
	// Snapshot captures what a member's work may change in the transaction's memory (the hooks to run
	// after the commit, and whatever domain state registered to follow savepoints) and returns what
	// puts it back, for a member whose savepoint is rolled back.
	Snapshot() (restore func())
	// AfterCommit is what to run once the commit is durable.
	AfterCommit() []func(context.Context)
}

// Errors members hear.
var (
	// ErrTxLost: the group's transaction is gone; nobody's work is in it. Try again.
	ErrTxLost = errors.New("write transaction rolled back: try again")
	// ErrPanicked: another member's work panicked, and the transaction was rolled back.
	ErrPanicked = errors.New("write transaction abandoned: another write in it panicked; try again")
)

// Write is one caller's transaction: its work, and where its outcome is sent.
type Write[T Tx] struct {
	fn       func(tx T) error
	done     chan error // buffered: the writer of the group never waits for the caller
	answered bool
}

// NewWrite returns a write of fn, to be written by Do or WriteGroup.
func NewWrite[T Tx](fn func(tx T) error) *Write[T] {
	return &Write[T]{fn: fn, done: make(chan error, 1)}
}

// Wait returns the write's outcome once it is known.
func (w *Write[T]) Wait() error { return <-w.done }

// answer sends the caller its outcome, once.
func (w *Write[T]) answer(err error) {
	if !w.answered {
		w.answered = true
		w.done <- err
	}
}

// AnswerAll sends each of ws the same outcome (those answered already keep theirs).
func AnswerAll[T Tx](ws []*Write[T], err error) {
	for _, w := range ws {
		w.answer(err)
	}
}

// Committed is what is left of a group once its transaction has committed: the members whose work
// is in it, not answered yet, and the hooks their work left.
type Committed[T Tx] struct {
	members []*Write[T]
	hooks   []func(context.Context)
}

// Empty says whether no member's work is waiting for the commit to be durable.
func (c Committed[T]) Empty() bool { return len(c.members) == 0 }

// Finish runs the hooks (unless err) and answers the members with err: nil once the commit is
// durable, or why it is not known to be.
func (c Committed[T]) Finish(ctx context.Context, err error) {
	if err == nil {
		for _, f := range c.hooks {
			f(context.WithoutCancel(ctx))
		}
	}
	AnswerAll(c.members, err)
}

// savepoint names the savepoint of each member of a group (released before the next one begins).
const savepoint = "keyward_write"

// WriteGroup runs the group's work in one transaction, and then, before it commits, the work more
// gives it (more may be nil). It answers the members whose work failed, and all of them when the
// transaction does; it returns those whose work committed, for the caller to answer once the commit
// is durable, and whether a transaction could be begun at all. A member alone in the transaction so
// far runs without a savepoint. ctx is for the transaction itself.
func WriteGroup[T Tx](ctx context.Context, begin func(context.Context) (T, error), group []*Write[T], more func() []*Write[T]) (done Committed[T], began bool) {
	tx, err := begin(ctx)
	if err != nil {
		AnswerAll(group, fmt.Errorf("begin: %w", err))
		return Committed[T]{}, false
	}
	var all, written []*Write[T] // all: every member taken in, for when one panics
	defer func() {
		if r := recover(); r != nil {
			tx.Rollback(ctx)
			AnswerAll(all, ErrPanicked) // those already answered keep their answer
			panic(r)
		}
	}()
	for batch := group; len(batch) > 0; batch = next(more) {
		alone := len(all) == 0 && len(batch) == 1
		all = append(all, batch...)
		if alone {
			if err := batch[0].fn(tx); err != nil {
				tx.Rollback(ctx)
				AnswerAll(batch, err)
				return Committed[T]{}, true
			}
			written = append(written, batch[0])
			continue
		}
		for i, w := range batch {
			err := member(ctx, tx, w)
			if errors.Is(err, ErrTxLost) {
				tx.Rollback(ctx)
				AnswerAll(written, err)
				AnswerAll(batch[i:], err)
				return Committed[T]{}, true
			}
			if err != nil {
				w.answer(err)
				continue
			}
			written = append(written, w)
		}
	}
	if len(written) == 0 {
		tx.Rollback(ctx)
		return Committed[T]{}, true
	}
	if err := tx.Commit(ctx); err != nil {
		tx.Rollback(ctx) // SQLite keeps a transaction whose commit failed open
		AnswerAll(written, fmt.Errorf("commit: %w", err))
		return Committed[T]{}, true
	}
	return Committed[T]{members: written, hooks: tx.AfterCommit()}, true
}

// next calls more, if there is one.
func next[T Tx](more func() []*Write[T]) []*Write[T] {
	if more == nil {
		return nil
	}
	return more()
}

// member runs one member's work inside its own savepoint; what it left in the transaction's memory
// goes with its savepoint.
func member[T Tx](ctx context.Context, tx T, w *Write[T]) error {
	if err := tx.Exec(ctx, "SAVEPOINT "+savepoint); err != nil {
		return fmt.Errorf("%w: %v", ErrTxLost, err)
	}
	restore := tx.Snapshot()
	if err := w.fn(tx); err != nil {
		restore()
		if err2 := tx.Exec(ctx, "ROLLBACK TO "+savepoint); err2 != nil {
			return fmt.Errorf("%w: %v", ErrTxLost, err2)
		}
		if err2 := tx.Exec(ctx, "RELEASE "+savepoint); err2 != nil {
			return fmt.Errorf("%w: %v", ErrTxLost, err2)
		}
		return err
	}
	if err := tx.Exec(ctx, "RELEASE "+savepoint); err != nil {
		return fmt.Errorf("%w: %v", ErrTxLost, err)
	}
	return nil
}

// Committer queues one process's writes and writes them in groups, one group at a time, each
// group's sync outside the lock (see the package's doc).
type Committer[T Tx] struct {
	// Write writes a group, and the writes more hands over before it commits (WriteGroup, on the
	// store's connection); it answers those whose work failed.
	Write func(group []*Write[T], more func() []*Write[T]) Committed[T]
	// Sync makes the last commit durable (the log's fsync).
	Sync func() error

	once    sync.Once
	lock    chan struct{} // holds a token while a group is written
	syncing chan struct{} // closed when the last group's sync is done (nil before the first)

	mu      sync.Mutex
	queue   []*Write[T]
	arrived chan struct{} // a token when a write was queued
}

func (c *Committer[T]) init() {
	c.once.Do(func() {
		c.lock = make(chan struct{}, 1)
		c.arrived = make(chan struct{}, 1)
	})
}

// Do queues w and returns its outcome once it is durable or undone: written by this caller, in a
// group of its own and whatever else queued, or by another caller's group.
func (c *Committer[T]) Do(w *Write[T]) error {
	c.init()
	c.mu.Lock()
	c.queue = append(c.queue, w)
	c.mu.Unlock()
	select {
	case c.arrived <- struct{}{}:
	default:
	}
	select {
	case err := <-w.done: // another caller wrote it in its group
		return err
	case c.lock <- struct{}{}:
		// w is still queued, or in a group taken before, which answers it once that is durable.
		var (
			done   Committed[T]
			synced chan struct{}
		)
		func() {
			defer func() { <-c.lock }() // even when a member's work panics (an HTTP handler may recover)
			if group := c.take(); len(group) > 0 {
				done = c.Write(group, c.more)
			}
			if !done.Empty() {
				synced = make(chan struct{})
				c.syncing = synced
			}
		}()
		if synced != nil {
			err := c.Sync()
			close(synced)
			if err != nil {
				err = fmt.Errorf("commit not known to be durable: %w", err)
			}
			done.Finish(context.Background(), err)
		}
		return <-w.done
	}
}

// Queued is how many writes wait to be taken into a group (for tests).
func (c *Committer[T]) Queued() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.queue)
}

// Locked runs fn once no group is being written, and none is until it returns (to close the
// store's connection).
func (c *Committer[T]) Locked(fn func()) {
	c.init()
	c.lock <- struct{}{}
	defer func() { <-c.lock }()
	fn()
}

// take returns the writes queued, and empties the queue.
func (c *Committer[T]) take() []*Write[T] {
	c.mu.Lock()
	defer c.mu.Unlock()
	group := c.queue
	c.queue = nil
	return group
}

// more is what a group's writer asks before it commits: while the last group's sync goes on, it
// waits for writes to queue and hands them over, to be written in the same transaction; once that
// sync is done it hands over what queued meanwhile, then nil: time to commit. So one sync is made at
// a time, and a group is held open no longer than one.
func (c *Committer[T]) more() []*Write[T] {
	if c.syncing == nil {
		return nil
	}
	select {
	case <-c.syncing:
		c.syncing = nil
		return nil
	default:
	}
	for {
		select {
		case <-c.syncing:
			c.syncing = nil
			return c.take()
		case <-c.arrived:
			if group := c.take(); len(group) > 0 {
				return group
			}
		}
	}
}
