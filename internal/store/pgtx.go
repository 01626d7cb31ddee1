package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/keyward/keyward/internal/store/dbfault"
)

// pgTx is a PostgreSQL transaction on pgx's own connection, so that statements whose answer nobody
// waits for travel with the next one in a single round trip (a pgx batch): BEGIN goes with the
// transaction's first statement, and writes queued with execLater (the audit trail's appends) go
// with the next statement or with COMMIT. database/sql's transactions cannot pipeline: each
// statement there is a round trip of its own.
type pgTx struct {
	conn    *pgx.Conn
	pending []queuedStmt // sent before the next statement; "begin" first until it has been sent
	begun   bool         // BEGIN has reached the server
}

type queuedStmt struct {
	sql  string
	args []any
}

func newPGTx(conn *pgx.Conn) *pgTx {
	return &pgTx{conn: conn, pending: []queuedStmt{{sql: "begin"}}}
}

// send sends what is pending and then q, in one batch, and reads the pending statements' results;
// the caller reads q's.
func (p *pgTx) send(ctx context.Context, q string, args []any) pgx.BatchResults {
	b := &pgx.Batch{}
	for _, s := range p.pending {
		b.Queue(s.sql, s.args...)
	}
	b.Queue(q, args...)
	return p.conn.SendBatch(ctx, b)
}

// settle reads the results of the pending statements sent before the caller's.
func (p *pgTx) settle(br pgx.BatchResults) error {
	pending := p.pending
	p.pending = nil
	for _, s := range pending {
		if _, err := br.Exec(); err != nil {
			return p.fault(fmt.Errorf("%s: %w", firstWords(s.sql), err))
		}
		if s.sql == "begin" {
			p.begun = true
		}
	}
	return nil
}

// fault marks an error that cost the connection (the server went away mid-statement) as the
// database being unavailable: the request gets a 503, the visit is retried soon.
func (p *pgTx) fault(err error) error {
	if err != nil && p.conn.IsClosed() && !dbfault.Unavailable(err) {
		return fmt.Errorf("%w: %w", dbfault.ErrUnavailable, err)
	}
	return err
}

func (p *pgTx) exec(ctx context.Context, q string, args []any) (sql.Result, error) {
	br := p.send(ctx, q, args)
	if err := p.settle(br); err != nil {
		_ = br.Close()
		return nil, err
	}
	tag, err := br.Exec()
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, p.fault(err)
	}
	return pgResult(tag), nil
}

// execLater queues a write whose result nobody reads: it travels with the next statement or COMMIT,
// and its error, if any, fails that one.
func (p *pgTx) execLater(q string, args []any) {
	p.pending = append(p.pending, queuedStmt{sql: q, args: args})
}

func (p *pgTx) query(ctx context.Context, q string, args []any) (rowsScanner, error) {
	br := p.send(ctx, q, args)
	if err := p.settle(br); err != nil {
		_ = br.Close()
		return nil, err
	}
	rows, err := br.Query()
	if err != nil {
		_ = br.Close()
		return nil, p.fault(err)
	}
	return &pgRows{Rows: rows, br: br, tx: p}, nil
}

func (p *pgTx) queryRow(ctx context.Context, q string, args []any) scanner {
	rows, err := p.query(ctx, q, args)
	return rawRow{rows: rows, err: err}
}

// commit sends what is pending with COMMIT.
func (p *pgTx) commit(ctx context.Context) error {
	_, err := p.exec(ctx, "commit", nil)
	return err
}

// rollback ends the transaction; one whose BEGIN never left has nothing to roll back.
func (p *pgTx) rollback(ctx context.Context) {
	p.pending = nil
	if p.begun && !p.conn.IsClosed() {
		_, _ = p.conn.Exec(context.WithoutCancel(ctx), "rollback")
	}
}

// pgRows are a query's rows; closing them closes the batch they came in.
type pgRows struct {
	pgx.Rows
	br pgx.BatchResults
	tx *pgTx
}

func (r *pgRows) Close() error {
	r.Rows.Close()
	err := r.Rows.Err()
	if cerr := r.br.Close(); err == nil {
		err = cerr
	}
	return r.tx.fault(err)
}

func (r *pgRows) Err() error { return r.tx.fault(r.Rows.Err()) }

// pgResult is a command tag as database/sql's Result.
type pgResult pgconn.CommandTag

func (r pgResult) RowsAffected() (int64, error) { return pgconn.CommandTag(r).RowsAffected(), nil }
func (r pgResult) LastInsertId() (int64, error) {
	return 0, errors.New("PostgreSQL has no last insert id: use RETURNING")
}

// firstWords names a statement in an error by its start.
func firstWords(q string) string {
	if len(q) > 40 {
		return q[:40] + "…"
	}
	return q
}
