// Package storetest opens migrated databases and vaults on them for the tests of the packages that
// use the store (the store's own tests cannot import it: it imports the store).
package storetest

import (
	"context"
	"database/sql"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/cloud"
	"github.com/keyward/keyward/internal/store"
	"github.com/keyward/keyward/internal/testenv"
	"github.com/keyward/keyward/internal/vault"

	_ "github.com/jackc/pgx/v5/stdlib" // the pgx driver, for Dump
)

// Open opens and migrates d, closed when the test ends.
func Open(t testing.TB, d testenv.Database) *store.DB {
	t.Helper()
	ctx := context.Background()
	db, err := store.Open(ctx, d.Driver, d.DSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := db.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	return db
}

// Vault returns a vault on db under a fresh local key-encryption key, guarded (GuardKEK); now may be
// nil.
func Vault(t testing.TB, db *store.DB, now func() time.Time) *vault.Vault {
	t.Helper()
	local, err := vault.NewLocalKEK(vault.GenerateKeyMaterial())
	if err != nil {
		t.Fatal(err)
	}
	kek := GuardKEK(t, local)
	var opts []vault.Option
	if now != nil {
		opts = append(opts, vault.WithClock(now))
	}
	v, err := vault.New(context.Background(), db.Vault(), kek, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// Dump returns everything the database d holds, as text, for tests that look for what must not be
// stored in the clear: SQLite's files as they are on disk (the WAL included), PostgreSQL's rows.
func Dump(t testing.TB, d testenv.Database) string {
	t.Helper()
	if d.Driver == "sqlite" {
		var b strings.Builder
		for _, suffix := range []string{"", "-wal"} {
			raw, err := os.ReadFile(strings.TrimPrefix(strings.SplitN(d.DSN, "?", 2)[0], "file:") + suffix)
			if err != nil && !os.IsNotExist(err) {
				t.Fatal(err)
			}
			b.Write(raw)
		}
		return b.String()
	}
	ctx := context.Background()
	db, err := sql.Open("pgx", d.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.QueryContext(ctx, `SELECT tablename FROM pg_tables WHERE schemaname = current_schema()`)
	if err != nil {
		t.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			t.Fatal(err)
		}
		tables = append(tables, name)
	}
	rows.Close()
	var b strings.Builder
	for _, table := range tables {
		rows, err := db.QueryContext(ctx, `SELECT t::text FROM `+table+` t`)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var row string
			if err := rows.Scan(&row); err != nil {
				t.Fatal(err)
			}
			b.WriteString(row + "\n")
		}
		rows.Close()
	}
	return b.String()
}

// GuardKEK wraps a key-encryption key so that a call to it while a write transaction is open fails
// the test: the KEK may be AWS KMS, whose round trip must never hold the database's write lock.
func GuardKEK(t testing.TB, k vault.KEK) vault.KEK {
	g := &guardedKEK{t: t, KEK: k}
	if gen, ok := k.(vault.DataKeyGenerator); ok {
		return &guardedGenerator{guardedKEK: g, gen: gen}
	}
	return g
}

type guardedKEK struct {
	vault.KEK
	t testing.TB
}

func (g *guardedKEK) check(ctx context.Context, op string) {
	if store.InWriteTransaction(ctx) {
		g.t.Errorf("the key-encryption key was called (%s) while a write transaction was open", op)
	}
}

func (g *guardedKEK) Wrap(ctx context.Context, dataKey, aad []byte) ([]byte, error) {
	g.check(ctx, "Wrap")
	return g.KEK.Wrap(ctx, dataKey, aad)
}

func (g *guardedKEK) Unwrap(ctx context.Context, wrapped, aad []byte) ([]byte, error) {
	g.check(ctx, "Unwrap")
	return g.KEK.Unwrap(ctx, wrapped, aad)
}

type guardedGenerator struct {
	*guardedKEK
	gen vault.DataKeyGenerator
}

func (g *guardedGenerator) GenerateDataKey(ctx context.Context, aad []byte) ([]byte, []byte, error) {
	g.check(ctx, "GenerateDataKey")
	return g.gen.GenerateDataKey(ctx, aad)
}

// GuardCloud wraps a cloud provider so that a call to it while a write transaction is open fails
// the test.
func GuardCloud(t testing.TB, p cloud.Provider) cloud.Provider {
	return cloud.Guarded(p, func(ctx context.Context, op string) {
		if store.InWriteTransaction(ctx) {
			t.Errorf("the cloud was called (%s) while a write transaction was open", op)
		}
	})
}
