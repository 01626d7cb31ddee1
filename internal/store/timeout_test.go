package store

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/testenv"
)

// TestStatementTimeout: with database.statement_timeout, a statement the database does not finish in
// time fails as Unavailable (a 503 for the API) instead of holding its caller; migrations, which may
// take long on a large table, are not bounded; a DSN that does not parse is refused without being
// repeated (it may hold a password).
func TestStatementTimeout(t *testing.T) {
	ctx := context.Background()
	dsn := testenv.PostgresDSN(t)
	db, err := Open(ctx, Postgres, dsn, WithStatementTimeout(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := db.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := db.sql.ExecContext(ctx, `SELECT pg_sleep(0.01)`); err != nil {
		t.Fatalf("a quick statement: %v", err)
	}
	start := time.Now()
	_, err = db.sql.ExecContext(ctx, `SELECT pg_sleep(5)`)
	if took := time.Since(start); err == nil || took > 3*time.Second {
		t.Fatalf("a slow statement: %v after %s", err, took)
	}
	if !Unavailable(err) {
		t.Fatalf("a statement cut by the timeout is not Unavailable: %v", err)
	}
	if Unavailable(errors.New("constraint")) || Unavailable(nil) {
		t.Fatal("Unavailable is not selective")
	}
	// The migration transaction lifts the bound.
	tx, err := db.sql.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `SET LOCAL statement_timeout = 0`); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.ExecContext(ctx, `SELECT pg_sleep(0.5)`); err != nil {
		t.Fatalf("a long statement after SET LOCAL statement_timeout = 0: %v", err)
	}

	// A database that is not there (a port nobody listens on) is Unavailable too.
	gone, err := Open(ctx, Postgres, "postgres://keyward:hunter2@127.0.0.1:1/keyward?connect_timeout=2")
	if err == nil {
		gone.Close()
		t.Fatal("opened a database that is not there")
	}
	if !Unavailable(err) || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("a database that is not there: %v", err)
	}
	if _, err := Open(ctx, Postgres, "postgres://keyward:hunter2@[::1/keyward"); err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("a DSN that does not parse: %v", err)
	}
}
