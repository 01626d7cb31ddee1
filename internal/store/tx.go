package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"sync"

	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/vault"
)

// Tx is a transaction that runs its statements through kept statements.
type Tx struct {
	*sql.Tx
	db          *DB
	missed      []string
	afterCommit []func(context.Context)
	identities  map[vault.Identity]int64 // row ids this transaction has looked up, and locked (PostgreSQL)
	auditHead   *audit.Head              // the audit trail's end, once this transaction appended to it
}

// txKey is the context key of the unit of work (see Atomically).
type txKey struct{}

// txFrom returns the transaction of the unit of work ctx carries on this database, or nil.
func (db *DB) txFrom(ctx context.Context) *Tx {
	if tx, ok := ctx.Value(txKey{}).(*Tx); ok && tx.db == db {
		return tx
	}
	return nil
}

// Atomically runs fn as one unit of work: every write that the stores of this database (the vault's
// and the rotation engine's alike) make with the context fn is given commits in one durable
// transaction when fn returns nil, or not at all. Called inside a unit of work, it joins it. fn must
// do all its work on this database with the context it is given, and call no cloud.
func (db *DB) Atomically(ctx context.Context, fn func(ctx context.Context) error) error {
	if db.txFrom(ctx) != nil {
		return fn(ctx)
	}
	return db.inTx(ctx, func(tx *Tx) error { return fn(context.WithValue(ctx, txKey{}, tx)) })
}

// onCommit runs fn once the transaction ctx carries has committed (at once outside a unit of work).
func (db *DB) onCommit(ctx context.Context, fn func(context.Context)) {
	if tx := db.txFrom(ctx); tx != nil {
		tx.afterCommit = append(tx.afterCommit, fn)
		return
	}
	fn(ctx)
}

// exec runs a statement in the transaction.
func (tx *Tx) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if st := tx.db.txStmt(ctx, tx.Tx, query, &tx.missed); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return tx.ExecContext(ctx, query, args...)
}

// queryRow runs a one-row read in the transaction.
func (tx *Tx) queryRow(ctx context.Context, query string, args ...any) *sql.Row {
	if st := tx.db.txStmt(ctx, tx.Tx, query, &tx.missed); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return tx.QueryRowContext(ctx, query, args...)
}

// query runs a many-row read in the transaction.
func (tx *Tx) query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if st := tx.db.txStmt(ctx, tx.Tx, query, &tx.missed); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return tx.QueryContext(ctx, query, args...)
}

// inTx runs fn in one transaction, committed when fn returns nil; inside a unit of work (see
// Atomically), fn runs in its transaction, which commits with the unit. On SQLite the transaction
// may be shared with other callers' (see committer); fn's work stays all or nothing.
func (db *DB) inTx(ctx context.Context, fn func(tx *Tx) error) error {
	if tx := db.txFrom(ctx); tx != nil {
		return fn(tx)
	}
	w := &write{fn: fn, done: make(chan error, 1)}
	if db.driver == SQLite {
		return db.commits.do(db, w)
	}
	db.writeGroup(ctx, []*write{w})
	return <-w.done
}

// committer groups this process's write transactions on SQLite. SQLite admits one writer at a time
// and every durable commit costs an fsync; a writer that finds the lock taken sleeps in SQLite's busy
// handler (1, 2, 5, 10… ms) before it looks again. So writers of one process queue here instead, and
// whichever of them gets the lock next writes every queued caller's work in one transaction, each in
// its own savepoint, with one commit: group commit. A caller whose work fails has its savepoint
// rolled back, not the others'; no caller returns before its own work is durable or undone.
// (Writers in other processes still meet at SQLite's lock.)
type committer struct {
	once  sync.Once
	lock  chan struct{} // holds a token while a group is written
	mu    sync.Mutex
	queue []*write
}

// write is one caller's transaction: its work, and where its outcome is sent.
type write struct {
	fn       func(tx *Tx) error
	done     chan error // buffered: the writer of the group never waits for the caller
	answered bool
}

// answer sends the caller its outcome, once.
func (w *write) answer(err error) {
	if !w.answered {
		w.answered = true
		w.done <- err
	}
}

// errPanicked is what the other members of a group hear when one's work panicked.
var errPanicked = errors.New("write transaction abandoned: another write in it panicked; try again")

func (c *committer) do(db *DB, w *write) error {
	c.once.Do(func() { c.lock = make(chan struct{}, 1) })
	c.mu.Lock()
	c.queue = append(c.queue, w)
	c.mu.Unlock()
	select {
	case err := <-w.done: // another caller wrote it in its group
		return err
	case c.lock <- struct{}{}:
		// Every group taken before this one was finished, outcomes sent, before the lock was let
		// go: w is either done already or still queued.
		c.mu.Lock()
		group := c.queue
		c.queue = nil
		c.mu.Unlock()
		func() {
			defer func() { <-c.lock }() // even when a member's work panics (an HTTP handler may recover)
			if len(group) > 0 {
				db.writeGroup(context.Background(), group)
			}
		}()
		return <-w.done
	}
}

// savepoint names the savepoint of each member of a group (released before the next one begins).
const savepoint = "keyward_write"

// writeGroup runs the group's work in one transaction and sends each member its outcome. One
// member's work runs without a savepoint. ctx is for the transaction itself; each member's
// statements run under the member's own context.
func (db *DB) writeGroup(ctx context.Context, group []*write) {
	fail := func(members []*write, err error) {
		for _, w := range members {
			w.answer(err)
		}
	}
	sqlTx, err := db.sql.BeginTx(ctx, nil)
	if err != nil {
		fail(group, fmt.Errorf("begin: %w", err))
		return
	}
	tx := &Tx{Tx: sqlTx, db: db}
	all := group
	defer func() {
		if r := recover(); r != nil {
			_ = tx.Rollback()
			fail(all, errPanicked) // those already answered keep their answer
			panic(r)
		}
	}()
	defer func() {
		for _, q := range tx.missed {
			_, _ = db.stmt(context.WithoutCancel(ctx), q) // a failure here only means the next call parses again
		}
	}()
	if len(group) == 1 {
		if err := group[0].fn(tx); err != nil {
			_ = tx.Rollback()
			fail(group, err)
			return
		}
	} else {
		var written []*write
		for i, w := range group {
			hooks := len(tx.afterCommit)
			err := tx.member(ctx, w)
			if errors.Is(err, errTxLost) {
				// An interrupted statement rolled the whole transaction back: nobody's work is in it.
				_ = tx.Rollback()
				fail(written, err)
				fail(group[i:], err)
				return
			}
			if err != nil {
				tx.afterCommit = tx.afterCommit[:hooks]
				w.answer(err)
				continue
			}
			written = append(written, w)
		}
		group = written
		if len(group) == 0 {
			_ = tx.Rollback()
			return
		}
	}
	if err := tx.Commit(); err != nil {
		fail(group, fmt.Errorf("commit: %w", err))
		return
	}
	for _, f := range tx.afterCommit {
		f(context.WithoutCancel(ctx))
	}
	fail(group, nil)
}

// errTxLost: the group's transaction is gone (SQLite rolls a whole transaction back when one of its
// statements is interrupted, as by a cancelled context).
var errTxLost = errors.New("write transaction rolled back: try again")

// member runs one member's work of a group inside its own savepoint; what it left in the
// transaction's memory (identity rows it looked up or created, the audit trail's end) goes with its
// savepoint.
func (tx *Tx) member(ctx context.Context, w *write) error {
	if _, err := tx.exec(ctx, "SAVEPOINT "+savepoint); err != nil {
		return fmt.Errorf("%w: %v", errTxLost, err)
	}
	identities, auditHead := maps.Clone(tx.identities), tx.auditHead
	if err := w.fn(tx); err != nil {
		tx.identities, tx.auditHead = identities, auditHead
		if _, err2 := tx.exec(ctx, "ROLLBACK TO "+savepoint); err2 != nil {
			return fmt.Errorf("%w: %v", errTxLost, err2)
		}
		if _, err2 := tx.exec(ctx, "RELEASE "+savepoint); err2 != nil {
			return fmt.Errorf("%w: %v", errTxLost, err2)
		}
		return err
	}
	if _, err := tx.exec(ctx, "RELEASE "+savepoint); err != nil {
		return fmt.Errorf("%w: %v", errTxLost, err)
	}
	return nil
}
