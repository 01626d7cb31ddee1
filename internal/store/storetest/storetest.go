// Package storetest opens migrated databases and vaults on them for the tests of the packages that
// use the store (the store's own tests cannot import it: it imports the store).
package storetest

import (
	"context"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/store"
	"github.com/keyward/keyward/internal/testenv"
	"github.com/keyward/keyward/internal/vault"
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

// Vault returns a vault on db under a fresh local key-encryption key; now may be nil.
func Vault(t testing.TB, db *store.DB, now func() time.Time) *vault.Vault {
	t.Helper()
	kek, err := vault.NewLocalKEK(vault.GenerateKeyMaterial())
	if err != nil {
		t.Fatal(err)
	}
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
