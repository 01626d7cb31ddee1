package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"

	"github.com/jackc/pgx/v5/stdlib"

	"github.com/keyward/keyward/internal/store/groupcommit"
)

// Tx is a transaction that runs its statements through kept statements: on PostgreSQL a
// database/sql transaction, on SQLite the committer's connection (see raw.go). On SQLite it may be
// shared by several callers' work, each in its own savepoint (package groupcommit); domain state
// kept in its memory follows those savepoints (see txState).
type Tx struct {
	pg          *pgTx    // PostgreSQL, on pgx's connection (see pgtx.go)
	raw         *rawConn // SQLite, inside BEGIN IMMEDIATE
	db          *DB
	afterCommit []func(context.Context)
	state       map[any]follower // domain state kept for the transaction's length
}

var _ groupcommit.Tx = (*Tx)(nil)

// A follower is domain state kept in a transaction's memory (the identity rows it looked up, the
// audit trail's end once it appended): snapshot returns what puts it back as it is now, for a
// member's work whose savepoint is rolled back.
type follower interface{ snapshot() (restore func()) }

// txState returns the transaction's state under key, made by mk on first use. It follows the
// savepoints of a group (see Tx.Snapshot).
func txState[S follower](tx *Tx, key any, mk func() S) S {
	if f, ok := tx.state[key]; ok {
		return f.(S)
	}
	s := mk()
	if tx.state == nil {
		tx.state = map[any]follower{}
	}
	tx.state[key] = s
	return s
}

// Snapshot implements groupcommit.Tx: the hooks to run after the commit and every follower, as
// they are now; state made after it is dropped by the restore.
func (tx *Tx) Snapshot() func() {
	hooks := len(tx.afterCommit)
	restores := map[any]func(){}
	for k, f := range tx.state {
		restores[k] = f.snapshot()
	}
	return func() {
		tx.afterCommit = tx.afterCommit[:hooks]
		for k := range tx.state {
			if r, ok := restores[k]; ok {
				r()
			} else {
				delete(tx.state, k)
			}
		}
	}
}

// AfterCommit implements groupcommit.Tx.
func (tx *Tx) AfterCommit() []func(context.Context) { return tx.afterCommit }

// Exec implements groupcommit.Tx (the savepoint statements).
func (tx *Tx) Exec(ctx context.Context, statement string) error {
	_, err := tx.exec(ctx, statement)
	return err
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
	return tx.pg.exec(ctx, query, args)
}

// execLater runs a write whose result nobody reads: on PostgreSQL it travels with the transaction's
// next statement or its COMMIT (one round trip fewer), and its error fails that one; on SQLite, at
// once.
func (tx *Tx) execLater(ctx context.Context, query string, args ...any) error {
	if tx.raw != nil {
		_, err := tx.raw.exec(ctx, query, args)
		return err
	}
	tx.pg.execLater(query, args)
	return nil
}

// execScript runs SQL that may hold several statements (a migration) in the transaction, unprepared.
func (tx *Tx) execScript(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if tx.raw != nil {
		return tx.raw.execScript(ctx, query, args)
	}
	if len(args) > 0 {
		return tx.pg.exec(ctx, query, args)
	}
	// Several statements in one: the simple protocol, once what is pending has been sent.
	if len(tx.pg.pending) > 0 {
		if _, err := tx.pg.exec(ctx, "select 1", nil); err != nil {
			return nil, err
		}
	}
	tag, err := tx.pg.conn.PgConn().Exec(ctx, query).ReadAll()
	if err != nil {
		return nil, tx.pg.fault(err)
	}
	if len(tag) == 0 {
		return pgResult{}, nil
	}
	return pgResult(tag[len(tag)-1].CommandTag), nil
}

// queryRow runs a one-row read in the transaction.
func (tx *Tx) queryRow(ctx context.Context, query string, args ...any) scanner {
	if tx.raw != nil {
		rows, err := tx.raw.query(ctx, query, args)
		return rawRow{rows: rows, err: err}
	}
	return tx.pg.queryRow(ctx, query, args)
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
	return tx.pg.query(ctx, query, args)
}

// Commit implements groupcommit.Tx.
func (tx *Tx) Commit(ctx context.Context) error {
	if tx.raw != nil {
		_, err := tx.raw.exec(ctx, "COMMIT", nil)
		return err
	}
	return tx.pg.commit(ctx)
}

// Rollback implements groupcommit.Tx: a transaction SQLite already rolled back is no error.
func (tx *Tx) Rollback(ctx context.Context) {
	if tx.raw != nil {
		_, _ = tx.raw.exec(context.WithoutCancel(ctx), "ROLLBACK", nil)
		return
	}
	tx.pg.rollback(ctx)
}

// inTx runs fn in one transaction, committed when fn returns nil; inside a unit of work (see
// Atomically), fn runs in its transaction, which commits with the unit. On SQLite the transaction
// may be shared with other callers' (see committer); fn's work stays all or nothing.
func (db *DB) inTx(ctx context.Context, fn func(tx *Tx) error) error {
	if tx := db.txFrom(ctx); tx != nil {
		return fn(tx)
	}
	w := groupcommit.NewWrite(fn)
	if db.driver == SQLite {
		return db.commits.Do(w)
	}
	// The transaction runs on the pooled connection's pgx side (see pgtx.go); database/sql gets the
	// connection back after, and drops it if the server went away meanwhile.
	conn, err := db.sql.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	err = conn.Raw(func(dc any) error {
		pc := dc.(*stdlib.Conn).Conn()
		begin := func(ctx context.Context) (*Tx, error) { return &Tx{pg: newPGTx(pc), db: db}, nil }
		done, _ := groupcommit.WriteGroup(ctx, begin, []*groupcommit.Write[*Tx]{w}, nil)
		done.Finish(ctx, nil) // PostgreSQL's commit returns once it is durable
		return nil
	})
	if err != nil {
		return err
	}
	return w.Wait()
}

// sqliteWriter writes SQLite's groups (package groupcommit) on one kept connection, through the
// driver (see raw.go). SQLite throws away a connection's page cache whenever another connection has
// written since its last transaction; writing every group on one connection keeps the pages that
// writes touch (the b-trees' upper levels, the tables' last pages) cached between them, instead of
// reading them again from the WAL on whichever pooled connection comes next. The committer's lock
// is held while it is used.
type sqliteWriter struct {
	conn *sql.Conn // the connection groups are written on
	raw  *rawConn  // conn as the driver sees it, with its kept statements
}

// newCommitter returns the committer of db's SQLite writes: groups written by w, the log synced by
// db.syncWAL (see walFile).
func newCommitter(db *DB, w *sqliteWriter) *groupcommit.Committer[*Tx] {
	return &groupcommit.Committer[*Tx]{
		Write: func(group []*groupcommit.Write[*Tx], more func() []*groupcommit.Write[*Tx]) groupcommit.Committed[*Tx] {
			return w.write(db, group, more)
		},
		Sync: func() error { return db.syncWAL() },
	}
}

// write writes a group on the writer's connection, taking one first if it has none.
func (c *sqliteWriter) write(db *DB, group []*groupcommit.Write[*Tx], more func() []*groupcommit.Write[*Tx]) groupcommit.Committed[*Tx] {
	ctx := context.Background()
	for attempt := 1; ; attempt++ {
		if c.conn == nil {
			conn, err := db.sql.Conn(ctx)
			if err != nil {
				groupcommit.AnswerAll(group, fmt.Errorf("begin: %w", err))
				return groupcommit.Committed[*Tx]{}
			}
			c.conn = conn
			db.wal.reset() // the log may be another since the last connection was let go
		}
		var (
			done     groupcommit.Committed[*Tx]
			began    bool
			panicked any
		)
		err := c.conn.Raw(func(dc any) error {
			// A member's work that panics has had the transaction rolled back (see WriteGroup): the
			// connection is fine, so the panic goes on only once Raw has returned.
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
			done, began = groupcommit.WriteGroup(ctx, begin, group, more)
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
			groupcommit.AnswerAll(group, fmt.Errorf("begin: %w", err))
			return groupcommit.Committed[*Tx]{}
		}
	}
}

// drop lets the writer's connection go, with its statements.
func (c *sqliteWriter) drop() {
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
