package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"reflect"
)

// The committer writes SQLite's transactions on the driver's connection itself (through
// sql.Conn.Raw), not through database/sql: its wrapping of every statement in a transaction (a
// per-transaction copy of the statement, locks on the pool, a goroutine per transaction, argument
// conversion by reflection) cost more than SQLite's own work for most of a write's statements.
// Reads outside a write transaction still go through database/sql and its pool.

// rowsScanner is the rows of a query: *sql.Rows, or *rawRows.
type rowsScanner interface {
	Next() bool
	Scan(dest ...any) error
	Close() error
	Err() error
}

// rawConn is the committer's SQLite connection as the driver sees it, with the statements it has
// prepared, each kept for the connection's life.
type rawConn struct {
	conn  driver.Conn
	stmts map[string]driver.Stmt
}

func newRawConn(conn driver.Conn) *rawConn {
	return &rawConn{conn: conn, stmts: map[string]driver.Stmt{}}
}

func (c *rawConn) stmt(ctx context.Context, query string) (driver.Stmt, error) {
	if st, ok := c.stmts[query]; ok {
		return st, nil
	}
	st, err := c.conn.(driver.ConnPrepareContext).PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	c.stmts[query] = st
	return st, nil
}

// prepared returns the kept statement for query and its arguments as the driver takes them, and
// the context to run it under: ctx without its cancellation, once ctx has been checked. The driver
// watches a cancellable context with a goroutine of its own for every statement, and a progress
// handler, so as to interrupt it; that cost about as much as a write's short statements themselves.
// So a write whose context ends fails at its next statement instead of within one.
func (c *rawConn) prepared(ctx context.Context, query string, args []any) (driver.Stmt, []driver.NamedValue, context.Context, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, nil, err
	}
	ctx = context.WithoutCancel(ctx)
	st, err := c.stmt(ctx, query)
	if err != nil {
		return nil, nil, nil, err
	}
	nv, err := namedValues(args)
	return st, nv, ctx, err
}

// exec runs one statement through its kept prepared statement.
func (c *rawConn) exec(ctx context.Context, query string, args []any) (driver.Result, error) {
	st, nv, ctx, err := c.prepared(ctx, query, args)
	if err != nil {
		return nil, err
	}
	return st.(driver.StmtExecContext).ExecContext(ctx, nv)
}

// execScript runs SQL that may hold several statements (a migration), unprepared.
func (c *rawConn) execScript(ctx context.Context, query string, args []any) (driver.Result, error) {
	nv, err := namedValues(args)
	if err != nil {
		return nil, err
	}
	return c.conn.(driver.ExecerContext).ExecContext(ctx, query, nv)
}

// query runs a read (or a write with RETURNING) through its kept prepared statement.
func (c *rawConn) query(ctx context.Context, query string, args []any) (*rawRows, error) {
	st, nv, ctx, err := c.prepared(ctx, query, args)
	if err != nil {
		return nil, err
	}
	rows, err := st.(driver.StmtQueryContext).QueryContext(ctx, nv)
	if err != nil {
		return nil, err
	}
	return &rawRows{rows: rows}, nil
}

// close closes the statements kept.
func (c *rawConn) close() {
	for q, st := range c.stmts {
		_ = st.Close()
		delete(c.stmts, q)
	}
}

// namedValues converts arguments as database/sql does for a driver without its own checker.
func namedValues(args []any) ([]driver.NamedValue, error) {
	nv := make([]driver.NamedValue, len(args))
	for i, a := range args {
		v, err := driver.DefaultParameterConverter.ConvertValue(a)
		if err != nil {
			return nil, fmt.Errorf("argument $%d: %w", i+1, err)
		}
		nv[i] = driver.NamedValue{Ordinal: i + 1, Value: v}
	}
	return nv, nil
}

// rawRows reads a driver's rows the way *sql.Rows does.
type rawRows struct {
	rows   driver.Rows
	vals   []driver.Value
	err    error
	closed bool
}

func (r *rawRows) Next() bool {
	if r.closed {
		return false
	}
	if r.vals == nil {
		r.vals = make([]driver.Value, len(r.rows.Columns()))
	}
	if err := r.rows.Next(r.vals); err != nil {
		if !errors.Is(err, io.EOF) {
			r.err = err
		}
		r.Close()
		return false
	}
	return true
}

func (r *rawRows) Scan(dest ...any) error {
	if r.closed || r.vals == nil {
		return errors.New("sql: Scan called without calling Next")
	}
	if len(dest) != len(r.vals) {
		return fmt.Errorf("sql: expected %d destination arguments in Scan, not %d", len(r.vals), len(dest))
	}
	for i, v := range r.vals {
		if err := assign(dest[i], v); err != nil {
			return fmt.Errorf("sql: Scan error on column index %d: %w", i, err)
		}
	}
	return nil
}

func (r *rawRows) Close() error {
	if r.closed {
		return nil
	}
	r.closed = true
	return r.rows.Close()
}

func (r *rawRows) Err() error { return r.err }

// rawRow is the first row of a query, as *sql.Row: sql.ErrNoRows when there is none. It reads
// SQLite's rows (rawRows) and PostgreSQL's in a transaction (pgRows).
type rawRow struct {
	rows rowsScanner
	err  error
}

func (r rawRow) Scan(dest ...any) error {
	if r.err != nil {
		return r.err
	}
	defer r.rows.Close()
	if !r.rows.Next() {
		if err := r.rows.Err(); err != nil {
			return err
		}
		return sql.ErrNoRows
	}
	if err := r.rows.Scan(dest...); err != nil {
		return err
	}
	return r.rows.Close()
}

// assign stores a value SQLite returned (int64, float64, string, []byte or nil) in dest, for the
// kinds of destination the store scans into (a domain type such as vault.State by its kind); any
// other is an error, not a guess.
func assign(dest any, v driver.Value) error {
	if b, ok := v.([]byte); ok {
		v = append([]byte(nil), b...) // never the driver's buffer, which the next row reuses
	}
	switch d := dest.(type) {
	case sql.Scanner:
		return d.Scan(v)
	case *any:
		*d = v
		return nil
	case *[]byte:
		switch v := v.(type) {
		case nil:
			*d = nil
			return nil
		case []byte:
			*d = v
			return nil
		case string:
			*d = []byte(v)
			return nil
		}
		return fmt.Errorf("cannot store %T into %T", v, dest)
	}
	rv := reflect.ValueOf(dest)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return fmt.Errorf("cannot store %T into %T", v, dest)
	}
	switch e := rv.Elem(); e.Kind() {
	case reflect.String:
		switch v := v.(type) {
		case string:
			e.SetString(v)
			return nil
		case []byte:
			e.SetString(string(v))
			return nil
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if v, ok := v.(int64); ok && !e.OverflowInt(v) {
			e.SetInt(v)
			return nil
		}
	case reflect.Bool:
		if v, ok := v.(int64); ok {
			e.SetBool(v != 0)
			return nil
		}
	case reflect.Float64:
		if v, ok := v.(float64); ok {
			e.SetFloat(v)
			return nil
		}
	}
	return fmt.Errorf("cannot store %T into %T", v, dest)
}
