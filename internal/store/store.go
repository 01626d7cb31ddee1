// Package store keeps Keyward's records in SQL: embedded SQLite (modernc.org/sqlite, no cgo) by
// default, PostgreSQL (pgx) in production. Every query is written once, in the SQL both accept; the
// few words that differ ({{id}}, {{blob}}) are filled in by the dialect when migrations run.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib" // also registers the "pgx" database/sql driver
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/keyward/keyward/internal/store/dbfault"
	"github.com/keyward/keyward/internal/store/groupcommit"
)

// Drivers.
const (
	SQLite   = "sqlite"
	Postgres = "postgres"
)

// DB is an open database with its dialect.
type DB struct {
	sql    *sql.DB
	driver string
	stmts  sync.Map // query text → *sql.Stmt, prepared once (see stmt)

	identityForUpdate string   // identityByName, locking the row on PostgreSQL
	identityIDs       sync.Map // vault.Identity → committed row id (SQLite; see Vault.identityID)

	commits *groupcommit.Committer[*Tx] // SQLite: this process's write transactions, grouped (see tx.go)
	writer  sqliteWriter                // SQLite: the connection the groups are written on
	wal     *walFile                    // SQLite: the write-ahead log, synced after each group's commit
	syncWAL func() error                // wal.sync; tests wrap it
}

// Open connects to the database. For SQLite, dsn is a file path (created 0600 when missing) or a
// file: URI; the connection is set up for WAL and durable commits. For PostgreSQL, dsn is a pgx
// connection string (URL or key=value), TLS settings included.
func Open(ctx context.Context, driver, dsn string, opts ...Option) (*DB, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	var (
		db  *sql.DB
		err error
	)
	switch driver {
	case SQLite:
		var conn string
		conn, err = sqliteDSN(dsn)
		if err != nil {
			return nil, err
		}
		db, err = sql.Open("sqlite", conn)
	case Postgres:
		var cfg *pgx.ConnConfig
		if cfg, err = pgx.ParseConfig(dsn); err != nil {
			return nil, fmt.Errorf("open postgres database: the DSN does not parse (%s)", redactedParseError(err))
		}
		if o.statementTimeout > 0 {
			// Every statement of every connection is bounded: a database that stops answering fails
			// the request (503) instead of holding it. Migrations lift the bound for themselves.
			cfg.RuntimeParams["statement_timeout"] = strconv.FormatInt(o.statementTimeout.Milliseconds(), 10)
		}
		db = stdlib.OpenDB(*cfg)
	default:
		return nil, fmt.Errorf("unknown database driver %q (want sqlite or postgres)", driver)
	}
	if err != nil {
		return nil, fmt.Errorf("open %s database: %w", driver, err)
	}
	db.SetConnMaxIdleTime(5 * time.Minute)
	if driver == SQLite {
		// One writer at a time is all SQLite allows; readers share the WAL.
		db.SetMaxOpenConns(8)
		db.SetMaxIdleConns(8)
	} else {
		// Keep the connections a pass uses open between uses (database/sql keeps 2 by default): a new
		// one costs a TLS handshake and the preparing of every statement again.
		db.SetMaxOpenConns(32)
		db.SetMaxIdleConns(32)
	}
	s := &DB{sql: db, driver: driver}
	s.identityForUpdate = s.dialect(identityByName + `{{for_update}}`)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("connect to %s database: %w", driver, err)
	}
	if driver == SQLite {
		if s.wal, err = openWAL(ctx, s); err != nil {
			db.Close()
			return nil, err
		}
		s.syncWAL = s.wal.sync
		s.commits = newCommitter(s, &s.writer)
	}
	return s, nil
}

// Option changes how Open connects.
type Option func(*options)

type options struct{ statementTimeout time.Duration }

// WithStatementTimeout bounds every statement on PostgreSQL (database.statement_timeout); 0: no bound.
func WithStatementTimeout(d time.Duration) Option { return func(o *options) { o.statementTimeout = d } }

// redactedParseError says what is wrong with a DSN without repeating it (it may hold a password).
func redactedParseError(err error) string {
	var pe *pgconn.ParseConfigError
	if errors.As(err, &pe) && pe.Unwrap() != nil {
		return pe.Unwrap().Error()
	}
	return "check its syntax"
}

// ErrUnavailable and Unavailable: see package dbfault (a leaf, so that the web pages, which this
// package imports, can classify errors too).
var (
	ErrUnavailable = dbfault.ErrUnavailable
	Unavailable    = dbfault.Unavailable
)

// SQLitePath is the file an SQLite DSN names ("" for an in-memory database).
func SQLitePath(dsn string) string {
	path, _, _ := strings.Cut(strings.TrimPrefix(dsn, "file:"), "?")
	if path == ":memory:" {
		return ""
	}
	return path
}

// sqliteDSN turns a path into a modernc.org/sqlite connection string: WAL journal,
// synchronous=NORMAL (SQLite does not fsync a commit: the committer fsyncs the log after it, outside
// SQLite's write lock, before any writer is answered, so a stored secret still survives a power cut),
// a busy timeout instead of immediate SQLITE_BUSY, foreign keys, secure_delete (shredded secrets are
// overwritten, not left in free pages), and BEGIN IMMEDIATE so that write transactions queue rather
// than deadlock.
func sqliteDSN(dsn string) (string, error) {
	path, query, _ := strings.Cut(strings.TrimPrefix(dsn, "file:"), "?")
	if path == "" {
		return "", errors.New("sqlite: empty database path")
	}
	if path != ":memory:" && !strings.HasPrefix(dsn, "file:") {
		// Create a missing file ourselves so that it is private from the start; SQLite would use the
		// umask. An existing file is left alone: closing a descriptor of it would drop every lock
		// this process holds on it (POSIX), SQLite's included, were the database open here already.
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		switch {
		case err == nil:
			f.Close()
		case !errors.Is(err, fs.ErrExist):
			return "", fmt.Errorf("sqlite: %w", err)
		default:
			if info, err := os.Stat(path); err == nil && info.IsDir() {
				return "", fmt.Errorf("sqlite: %s is a directory, not a database file", path)
			}
		}
	}
	q, err := url.ParseQuery(query)
	if err != nil {
		return "", fmt.Errorf("sqlite: bad options in %q: %w", dsn, err)
	}
	for _, p := range []string{"journal_mode(WAL)", "synchronous(NORMAL)", "busy_timeout(15000)", "foreign_keys(ON)", "secure_delete(ON)"} {
		q.Add("_pragma", p)
	}
	q.Set("_txlock", "immediate")
	return "file:" + path + "?" + q.Encode(), nil
}

// Optimize refreshes the statistics the query planner chooses indexes by (SQLite's PRAGMA optimize,
// PostgreSQL's ANALYZE; autovacuum does it there too): without them SQLite may read a filter's index
// where scanning the trail in order would be far quicker. serve runs it daily.
func (db *DB) Optimize(ctx context.Context) error {
	q := `ANALYZE`
	if db.driver == SQLite {
		q = `PRAGMA optimize=0x10002` // 0x10000: every table, even unchanged ones; 0x2: ANALYZE where it helps
	}
	if _, err := db.sql.ExecContext(ctx, q); err != nil {
		return fmt.Errorf("optimize the database: %w", err)
	}
	return nil
}

// Driver returns "sqlite" or "postgres".
func (db *DB) Driver() string { return db.driver }

// Close closes the database.
func (db *DB) Close() error {
	if db.commits != nil {
		db.commits.Locked(db.writer.drop) // once no group is being written
	}
	if db.wal != nil {
		defer db.wal.close()
	}
	db.stmts.Range(func(_, st any) bool { st.(*sql.Stmt).Close(); return true })
	return db.sql.Close()
}

// Ping checks that the database answers.
func (db *DB) Ping(ctx context.Context) error { return db.sql.PingContext(ctx) }

// stmt returns the statement for query, prepared once per process and kept. SQLite would otherwise
// parse every query on every call: half the cost of a vault read, a fifth of a write.
func (db *DB) stmt(ctx context.Context, query string) (*sql.Stmt, error) {
	if st, ok := db.stmts.Load(query); ok {
		return st.(*sql.Stmt), nil
	}
	st, err := db.sql.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	if prev, loaded := db.stmts.LoadOrStore(query, st); loaded {
		st.Close()
		return prev.(*sql.Stmt), nil
	}
	return st, nil
}

// queryRow runs a one-row read through a kept statement, inside the unit of work ctx carries if any.
func (db *DB) queryRow(ctx context.Context, query string, args ...any) scanner {
	if tx := db.txFrom(ctx); tx != nil {
		return tx.queryRow(ctx, query, args...)
	}
	st, err := db.stmt(ctx, query)
	if err != nil {
		return db.sql.QueryRowContext(ctx, query, args...) // reports the same error through Scan
	}
	return st.QueryRowContext(ctx, args...)
}

// query runs a many-row read through a kept statement, inside the unit of work ctx carries if any.
func (db *DB) query(ctx context.Context, query string, args ...any) (rowsScanner, error) {
	if tx := db.txFrom(ctx); tx != nil {
		return tx.query(ctx, query, args...)
	}
	st, err := db.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(ctx, args...)
}

// Kinds of constraint violation, recognised by driver error code.
type violation int

const (
	noViolation violation = iota
	primaryKeyViolation
	uniqueViolation
)

// constraintViolation classifies err, with the constraint's name where the driver tells it.
func constraintViolation(err error) (violation, string) {
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() {
		case sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
			return primaryKeyViolation, ""
		case sqlite3.SQLITE_CONSTRAINT_UNIQUE:
			return uniqueViolation, ""
		}
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "23505" {
		if strings.HasSuffix(pe.ConstraintName, "_pkey") {
			return primaryKeyViolation, pe.ConstraintName
		}
		return uniqueViolation, pe.ConstraintName
	}
	return noViolation, ""
}

func micros(t time.Time) int64 { return t.UnixMicro() }

func fromMicros(v sql.NullInt64) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	return time.UnixMicro(v.Int64).UTC()
}

func nullMicros(t time.Time) sql.NullInt64 {
	if t.IsZero() {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: t.UnixMicro(), Valid: true}
}
