package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"maps"
	"sync"

	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/vault"
)

// Tx is a transaction that runs its statements through kept statements: on PostgreSQL a
// database/sql transaction, on SQLite the committer's connection (see raw.go).
type Tx struct {
	sql         *sql.Tx  // PostgreSQL
	raw         *rawConn // SQLite, inside BEGIN IMMEDIATE
	db          *DB
	missed      []string
	afterCommit []func(context.Context)
	identities  map[vault.Identity]int64 // row ids this transaction has looked up, and locked (PostgreSQL)
	auditHead   *audit.Head              // the audit trail's end, once this transaction appended to it
}

// txKey is the context key of the unit of work (see Atomically).
type txKey struct{}

// InWriteTransaction says whether ctx carries an open unit of work (Atomically) of any database. No
// cloud or KMS call may happen then — it would hold the database's write lock (all of SQLite's) for
// a network round trip — and the tests check it with the guards of storetest.
func InWriteTransaction(ctx context.Context) bool {
	_, ok := ctx.Value(txKey{}).(*Tx)
	return ok
}

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
	if tx.raw != nil {
		return tx.raw.exec(ctx, query, args)
	}
	if st := tx.db.txStmt(ctx, tx.sql, query, &tx.missed); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return tx.sql.ExecContext(ctx, query, args...)
}

// execScript runs SQL that may hold several statements (a migration) in the transaction, unprepared.
func (tx *Tx) execScript(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if tx.raw != nil {
		return tx.raw.execScript(ctx, query, args)
	}
	return tx.sql.ExecContext(ctx, query, args...)
}

// queryRow runs a one-row read in the transaction.
func (tx *Tx) queryRow(ctx context.Context, query string, args ...any) scanner {
	if tx.raw != nil {
		rows, err := tx.raw.query(ctx, query, args)
		return rawRow{rows: rows, err: err}
	}
	if st := tx.db.txStmt(ctx, tx.sql, query, &tx.missed); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return tx.sql.QueryRowContext(ctx, query, args...)
}

// query runs a many-row read in the transaction.
func (tx *Tx) query(ctx context.Context, query string, args ...any) (rowsScanner, error) {
	if tx.raw != nil {
		rows, err := tx.raw.query(ctx, query, args)
		if err != nil {
			return nil, err
		}
		return rows, nil
	}
	if st := tx.db.txStmt(ctx, tx.sql, query, &tx.missed); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return tx.sql.QueryContext(ctx, query, args...)
}

// commit commits the transaction.
func (tx *Tx) commit(ctx context.Context) error {
	if tx.raw != nil {
		_, err := tx.raw.exec(ctx, "COMMIT", nil)
		return err
	}
	return tx.sql.Commit()
}

// rollback rolls the transaction back; a transaction SQLite already rolled back is no error.
func (tx *Tx) rollback(ctx context.Context) {
	if tx.raw != nil {
		_, _ = tx.raw.exec(context.WithoutCancel(ctx), "ROLLBACK", nil)
		return
	}
	_ = tx.sql.Rollback()
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
	begin := func(ctx context.Context) (*Tx, error) {
		sqlTx, err := db.sql.BeginTx(ctx, nil)
		if err != nil {
			return nil, err
		}
		return &Tx{sql: sqlTx, db: db}, nil
	}
	done, _ := db.writeGroup(ctx, begin, []*write{w}, nil)
	done.finish(ctx, nil) // PostgreSQL's commit returns once it is durable
	return <-w.done
}

// committer groups this process's write transactions on SQLite. SQLite admits one writer at a time
// and every durable commit costs an fsync; a writer that finds the lock taken sleeps in SQLite's busy
// handler (1, 2, 5, 10… ms) before it looks again. So writers of one process queue here instead, and
// whichever of them gets the lock next writes every queued caller's work in one transaction, each in
// its own savepoint, with one commit: group commit. A caller whose work fails has its savepoint
// rolled back, not the others'; no caller returns before its own work is durable or undone.
// (Writers in other processes still meet at SQLite's lock.)
//
// The fsync is made outside the lock. SQLite commits without one (synchronous=NORMAL, see
// sqliteDSN); the group's writer lets the lock go, fsyncs the write-ahead log itself (see walFile),
// and only then answers its members. Meanwhile the next writer runs its group's statements, and
// takes in whoever queues, until that fsync is done; then it commits. So the disk's time overlaps
// the next group's work, and there is still one commit per fsync. A commit may be seen by a reader
// of this database one fsync before it is durable; no caller hears of it, and so nothing is done in
// a cloud on the strength of it, before that fsync. A power cut in between loses the commit whole
// (SQLite's log is checksummed), never part of it.
type committer struct {
	once    sync.Once
	lock    chan struct{} // holds a token while a group is written
	conn    *sql.Conn     // the connection groups are written on, while lock is held
	raw     *rawConn      // conn as the driver sees it, with its kept statements
	syncing chan struct{} // closed when the last group's fsync is done (nil before the first)

	mu      sync.Mutex
	queue   []*write
	arrived chan struct{} // a token when a write was queued
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

// answerAll sends each of ws the same outcome (those answered already keep theirs).
func answerAll(ws []*write, err error) {
	for _, w := range ws {
		w.answer(err)
	}
}

// errPanicked is what the other members of a group hear when one's work panicked.
var errPanicked = errors.New("write transaction abandoned: another write in it panicked; try again")

func (c *committer) init() {
	c.once.Do(func() {
		c.lock = make(chan struct{}, 1)
		c.arrived = make(chan struct{}, 1)
	})
}

func (c *committer) do(db *DB, w *write) error {
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
			done   committed
			synced chan struct{}
		)
		func() {
			defer func() { <-c.lock }() // even when a member's work panics (an HTTP handler may recover)
			if group := c.take(); len(group) > 0 {
				done = c.write(db, group)
			}
			if len(done.members) > 0 {
				synced = make(chan struct{})
				c.syncing = synced
			}
		}()
		if synced != nil {
			err := db.syncWAL()
			close(synced)
			if err != nil {
				err = fmt.Errorf("commit not known to be durable: %w", err)
			}
			done.finish(context.Background(), err)
		}
		return <-w.done
	}
}

// take returns the writes queued, and empties the queue.
func (c *committer) take() []*write {
	c.mu.Lock()
	defer c.mu.Unlock()
	group := c.queue
	c.queue = nil
	return group
}

// more is what a group's writer asks before it commits: while the last group's fsync goes on, it
// waits for writes to queue and hands them over, to be written in the same transaction; once that
// fsync is done it hands over what queued meanwhile, then nil: time to commit. So one fsync is made
// at a time, and a group is held open no longer than one.
func (c *committer) more() []*write {
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

// write writes a group on the committer's own connection, through the driver (see raw.go). SQLite
// throws away a connection's page cache whenever another connection has written since its last
// transaction; writing every group on one connection keeps the pages that writes touch (the
// b-trees' upper levels, the tables' last pages) cached between them, instead of reading them again
// from the WAL on whichever pooled connection comes next.
func (c *committer) write(db *DB, group []*write) committed {
	ctx := context.Background()
	for attempt := 1; ; attempt++ {
		if c.conn == nil {
			conn, err := db.sql.Conn(ctx)
			if err != nil {
				answerAll(group, fmt.Errorf("begin: %w", err))
				return committed{}
			}
			c.conn = conn
			db.wal.reset() // the log may be another since the last connection was let go
		}
		var (
			done     committed
			began    bool
			panicked any
		)
		err := c.conn.Raw(func(dc any) error {
			// A member's work that panics has had the transaction rolled back (see writeGroup):
			// the connection is fine, so the panic goes on only once Raw has returned.
			defer func() { panicked = recover() }()
			if c.raw == nil || c.raw.conn != dc {
				c.raw = newRawConn(dc.(driver.Conn))
			}
			begin := func(ctx context.Context) (*Tx, error) {
				if _, err := c.raw.exec(ctx, "BEGIN IMMEDIATE", nil); err != nil {
					return nil, err
				}
				return &Tx{raw: c.raw, db: db}, nil
			}
			done, began = db.writeGroup(ctx, begin, group, c.more)
			return nil
		})
		if panicked != nil {
			panic(panicked)
		}
		if err == nil {
			if !began {
				// The connection could not begin a transaction: let it go, and take another next time.
				c.drop()
			}
			return done
		}
		// Raw itself failed: the connection is gone. Nobody's work was run; try once on another.
		c.drop()
		if attempt == 2 {
			answerAll(group, fmt.Errorf("begin: %w", err))
			return committed{}
		}
	}
}

// drop lets the committer's connection go, with its statements.
func (c *committer) drop() {
	if c.conn == nil {
		return
	}
	if c.raw != nil {
		_ = c.conn.Raw(func(any) error { c.raw.close(); return nil })
		c.raw = nil
	}
	_ = c.conn.Close()
	c.conn = nil
}

// close lets the committer's connection go, once no group is being written.
func (c *committer) close() {
	c.init()
	c.lock <- struct{}{}
	defer func() { <-c.lock }()
	c.drop()
}

// savepoint names the savepoint of each member of a group (released before the next one begins).
const savepoint = "keyward_write"

// committed is what is left of a group once its transaction has committed: the members whose work
// is in it, not answered yet, and the hooks their work left.
type committed struct {
	members []*write
	hooks   []func(context.Context)
}

// finish runs the hooks (unless err) and answers the members with err: nil once the commit is
// durable, or why it is not known to be.
func (c committed) finish(ctx context.Context, err error) {
	if err == nil {
		for _, f := range c.hooks {
			f(context.WithoutCancel(ctx))
		}
	}
	answerAll(c.members, err)
}

// writeGroup runs the group's work in one transaction on one connection, and then, before it
// commits, the work more gives it (more may be nil). It answers the members whose work failed, and
// all of them when the transaction does; it returns those whose work committed, for the caller to
// answer once the commit is durable, and whether a transaction could be begun at all. A member alone
// in the transaction so far runs without a savepoint. ctx is for the transaction itself; each
// member's statements run under the member's own context.
func (db *DB) writeGroup(ctx context.Context, begin func(context.Context) (*Tx, error), group []*write, more func() []*write) (done committed, began bool) {
	tx, err := begin(ctx)
	if err != nil {
		answerAll(group, fmt.Errorf("begin: %w", err))
		return committed{}, false
	}
	var all, written []*write // all: every member taken in, for when one panics
	defer func() {
		if r := recover(); r != nil {
			tx.rollback(ctx)
			answerAll(all, errPanicked) // those already answered keep their answer
			panic(r)
		}
	}()
	defer func() {
		for _, q := range tx.missed {
			_, _ = db.stmt(context.WithoutCancel(ctx), q) // a failure here only means the next call parses again
		}
	}()
	for batch := group; len(batch) > 0; batch = next(more) {
		alone := len(all) == 0 && len(batch) == 1
		all = append(all, batch...)
		if alone {
			if err := batch[0].fn(tx); err != nil {
				tx.rollback(ctx)
				answerAll(batch, err)
				return committed{}, true
			}
			written = append(written, batch[0])
			continue
		}
		for i, w := range batch {
			hooks := len(tx.afterCommit)
			err := tx.member(ctx, w)
			if errors.Is(err, errTxLost) {
				// An interrupted statement rolled the whole transaction back: nobody's work is in it.
				tx.rollback(ctx)
				answerAll(written, err)
				answerAll(batch[i:], err)
				return committed{}, true
			}
			if err != nil {
				tx.afterCommit = tx.afterCommit[:hooks]
				w.answer(err)
				continue
			}
			written = append(written, w)
		}
	}
	if len(written) == 0 {
		tx.rollback(ctx)
		return committed{}, true
	}
	if err := tx.commit(ctx); err != nil {
		tx.rollback(ctx) // SQLite keeps a transaction whose commit failed open
		answerAll(written, fmt.Errorf("commit: %w", err))
		return committed{}, true
	}
	return committed{members: written, hooks: tx.afterCommit}, true
}

// next calls more, if there is one.
func next(more func() []*write) []*write {
	if more == nil {
		return nil
	}
	return more()
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
