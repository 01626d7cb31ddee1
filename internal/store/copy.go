package store

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// TableRows is how many rows a table holds.
type TableRows struct {
	Table string `json:"table"`
	Rows  int64  `json:"rows"`
}

// CountRows counts a table's rows.
func (db *DB) CountRows(ctx context.Context, table string) (int64, error) {
	var n int64
	err := db.sql.QueryRowContext(ctx, `SELECT COUNT(*) FROM "`+strings.ReplaceAll(table, `"`, `""`)+`"`).Scan(&n)
	return n, err
}

// pgColumn is a column of a PostgreSQL table, as its catalog describes it.
type pgColumn struct {
	name, dataType string
	identity       bool
}

// CopyTo copies every row of db, a SQLite database, into to, a PostgreSQL database migrated to the
// same schema version and empty, in one transaction of to's: all or nothing. Rows are copied as
// stored — a sealed secret stays sealed, its data key wrapped; nothing is decrypted, and no key is
// needed. Tables go parents first (by the foreign keys of to's catalog), each with COPY; identity
// columns then continue after the highest id copied. progress, when set, is told after each table.
// It returns the rows of each table, counted again in to before the commit.
func (db *DB) CopyTo(ctx context.Context, to *DB, progress func(TableRows)) ([]TableRows, error) {
	if db.driver != SQLite || to.driver != Postgres {
		return nil, fmt.Errorf("copy goes from SQLite to PostgreSQL (got %s to %s)", db.driver, to.driver)
	}
	for _, d := range []*DB{db, to} {
		if err := d.Ready(ctx); err != nil {
			return nil, fmt.Errorf("%s: %w (run keyward migrate on it first)", d.driver, err)
		}
	}
	tables, columns, err := to.copyPlan(ctx)
	if err != nil {
		return nil, err
	}
	var counts []TableRows
	conn, err := to.sql.Conn(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	err = conn.Raw(func(dc any) error {
		pg := dc.(*stdlib.Conn).Conn()
		tx, err := pg.Begin(ctx)
		if err != nil {
			return err
		}
		defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
		// A large trail takes longer than database.statement_timeout to copy.
		if _, err := tx.Exec(ctx, `SET LOCAL statement_timeout = 0`); err != nil {
			return err
		}
		if err := assertEmpty(ctx, tx, tables); err != nil {
			return err
		}
		for _, t := range tables {
			if t == "schema_migrations" { // the target's own, written by its migration
				continue
			}
			n, err := db.copyTable(ctx, tx, t, columns[t])
			if err != nil {
				return err
			}
			counts = append(counts, TableRows{Table: t, Rows: n})
			if progress != nil {
				progress(TableRows{Table: t, Rows: n})
			}
		}
		return tx.Commit(ctx)
	})
	if err != nil {
		return nil, fmt.Errorf("copy to PostgreSQL: %w", err)
	}
	return counts, nil
}

// copyPlan reads the PostgreSQL schema's tables, parents before children, and their columns.
func (db *DB) copyPlan(ctx context.Context) ([]string, map[string][]pgColumn, error) {
	rows, err := db.sql.QueryContext(ctx, `SELECT table_name, column_name, data_type, is_identity = 'YES'
		FROM information_schema.columns WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position`)
	if err != nil {
		return nil, nil, err
	}
	columns := map[string][]pgColumn{}
	for rows.Next() {
		var t string
		var c pgColumn
		if err := rows.Scan(&t, &c.name, &c.dataType, &c.identity); err != nil {
			rows.Close()
			return nil, nil, err
		}
		columns[t] = append(columns[t], c)
	}
	if err := rows.Close(); err != nil {
		return nil, nil, err
	}
	rows, err = db.sql.QueryContext(ctx, `SELECT DISTINCT child.relname, parent.relname FROM pg_constraint c
		JOIN pg_class child ON child.oid = c.conrelid JOIN pg_class parent ON parent.oid = c.confrelid
		JOIN pg_namespace n ON n.oid = child.relnamespace
		WHERE c.contype = 'f' AND n.nspname = current_schema() AND child.oid <> parent.oid`)
	if err != nil {
		return nil, nil, err
	}
	parents := map[string][]string{}
	for rows.Next() {
		var child, parent string
		if err := rows.Scan(&child, &parent); err != nil {
			rows.Close()
			return nil, nil, err
		}
		parents[child] = append(parents[child], parent)
	}
	if err := rows.Close(); err != nil {
		return nil, nil, err
	}
	names := make([]string, 0, len(columns))
	for t := range columns {
		names = append(names, t)
	}
	slices.Sort(names)
	var order []string
	placed := map[string]bool{}
	var place func(t string)
	place = func(t string) {
		if placed[t] {
			return
		}
		placed[t] = true
		for _, p := range parents[t] {
			place(p)
		}
		order = append(order, t)
	}
	for _, t := range names {
		place(t)
	}
	return order, columns, nil
}

// copyTable streams one SQLite table into PostgreSQL with COPY, converting what SQLite stores
// loosely (0 and 1 for a boolean, text for bytes) to the column's type; counts the rows again on
// PostgreSQL's side and continues its identity columns there. It returns how many rows.
func (db *DB) copyTable(ctx context.Context, tx pgx.Tx, table string, cols []pgColumn) (int64, error) {
	names := make([]string, len(cols))
	quoted := make([]string, len(cols))
	for i, c := range cols {
		names[i], quoted[i] = c.name, `"`+c.name+`"`
	}
	rows, err := db.sql.QueryContext(ctx, `SELECT `+strings.Join(quoted, ", ")+` FROM "`+table+`"`)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", table, err)
	}
	defer rows.Close()
	vals := make([]any, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	var convErr error
	n, err := tx.CopyFrom(ctx, pgx.Identifier{table}, names, pgx.CopyFromFunc(func() ([]any, error) {
		if !rows.Next() {
			return nil, rows.Err()
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		out := make([]any, len(vals))
		for i, v := range vals {
			if out[i], convErr = convert(v, cols[i].dataType); convErr != nil {
				return nil, fmt.Errorf("table %s, column %s: %w", table, cols[i].name, convErr)
			}
		}
		return out, nil
	}))
	if err != nil {
		return 0, fmt.Errorf("copy %s: %w", table, err)
	}
	var there int64
	if err := tx.QueryRow(ctx, `SELECT COUNT(*) FROM `+pgx.Identifier{table}.Sanitize()).Scan(&there); err != nil {
		return 0, err
	}
	if there != n {
		return 0, fmt.Errorf("table %s: %d rows read, %d in PostgreSQL", table, n, there)
	}
	for _, c := range cols { // ids made later continue after the highest copied
		if c.identity {
			col := pgx.Identifier{c.name}.Sanitize()
			if _, err := tx.Exec(ctx, `SELECT setval(pg_get_serial_sequence($1, $2), GREATEST(MAX(`+col+`), 1), MAX(`+col+`) IS NOT NULL)
				FROM `+pgx.Identifier{table}.Sanitize(), table, c.name); err != nil {
				return 0, fmt.Errorf("table %s: continue its ids: %w", table, err)
			}
		}
	}
	return n, nil
}

// assertEmpty refuses a target that holds rows (but for its own schema_migrations).
func assertEmpty(ctx context.Context, tx pgx.Tx, tables []string) error {
	for _, t := range tables {
		var n int64
		if err := tx.QueryRow(ctx, `SELECT COUNT(*) FROM `+pgx.Identifier{t}.Sanitize()).Scan(&n); err != nil {
			return fmt.Errorf("count %s: %w", t, err)
		}
		if n > 0 && t != "schema_migrations" {
			return fmt.Errorf("the PostgreSQL database is not empty: table %s holds %d rows; copy into a new database", t, n)
		}
	}
	return nil
}

// convert turns a value SQLite returned into one for a PostgreSQL column of dataType.
func convert(v any, dataType string) (any, error) {
	if v == nil {
		return nil, nil
	}
	switch dataType {
	case "boolean":
		switch b := v.(type) {
		case int64:
			return b != 0, nil
		case bool:
			return b, nil
		}
	case "bytea":
		switch b := v.(type) {
		case []byte:
			return slices.Clone(b), nil
		case string:
			return []byte(b), nil
		}
	case "text":
		switch s := v.(type) {
		case string:
			return s, nil
		case []byte:
			return string(s), nil
		}
	case "bigint", "integer":
		if i, ok := v.(int64); ok {
			return i, nil
		}
	default:
		return v, nil
	}
	return nil, fmt.Errorf("a %T where PostgreSQL has %s", v, dataType)
}
