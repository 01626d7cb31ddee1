package vault_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyward/keyward/internal/secret"
	"github.com/keyward/keyward/internal/store"
	"github.com/keyward/keyward/internal/store/storetest"
	"github.com/keyward/keyward/internal/testenv"
	"github.com/keyward/keyward/internal/vault"
)

func openStore(t *testing.T) *store.DB {
	return storetest.Open(t, testenv.Database{Driver: store.SQLite, DSN: filepath.Join(t.TempDir(), "k.db")})
}

func TestKeyFileCreatedPrivateAndReused(t *testing.T) {
	ctx := context.Background()
	db := openStore(t)
	path := filepath.Join(t.TempDir(), "keyward.key")
	k1, created, err := vault.OpenKeyFile(ctx, path, db.Vault(), nil)
	if err != nil || !created {
		t.Fatalf("first open: created=%v err=%v", created, err)
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, want 0600", info.Mode().Perm())
	}
	k2, created, err := vault.OpenKeyFile(ctx, path, db.Vault(), nil)
	if err != nil || created || k2.ID() != k1.ID() {
		t.Fatalf("second open: created=%v err=%v same=%v", created, err, k2 != nil && k2.ID() == k1.ID())
	}
}

// TestMissingKeyFileNotReplaced: when the vault holds data, a missing key file is an error, never
// a reason to mint a new key that would strand the old data.
func TestMissingKeyFileNotReplaced(t *testing.T) {
	ctx := context.Background()
	db := openStore(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "keyward.key")
	k, _, err := vault.OpenKeyFile(ctx, path, db.Vault(), nil)
	if err != nil {
		t.Fatal(err)
	}
	v, err := vault.New(ctx, db.Vault(), k)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Import(ctx, vault.Identity{Cloud: "aws", AccountID: "123456789012", UserName: "a"},
		"AKIAAAAAAAAAAAAAAAA1", secret.New("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path, path+".moved"); err != nil {
		t.Fatal(err)
	}
	_, _, err = vault.OpenKeyFile(ctx, path, db.Vault(), nil)
	if err == nil || !strings.Contains(err.Error(), "is missing") || !strings.Contains(err.Error(), k.ID()) {
		t.Fatalf("missing key file with data present: %v", err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatal("a new key file was written over the missing one")
	}
}

func TestKeyFileWarningsAndErrors(t *testing.T) {
	dir := t.TempDir()
	loose := filepath.Join(dir, "loose.key")
	if err := os.WriteFile(loose, []byte(vault.GenerateKeyMaterial().Reveal()+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var warned []string
	if _, err := vault.ReadKeyFile(loose, func(msg string, args ...any) { warned = append(warned, fmt.Sprint(msg, args)) }); err != nil {
		t.Fatal(err)
	}
	if len(warned) != 1 || !strings.Contains(warned[0], "chmod 600") {
		t.Fatalf("warnings for a 0644 key file: %v", warned)
	}
	bad := filepath.Join(dir, "bad.key")
	if err := os.WriteFile(bad, []byte("not base64!"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := vault.ReadKeyFile(bad, nil); err == nil || !strings.Contains(err.Error(), "bad.key") || !strings.Contains(err.Error(), "base64") {
		t.Fatalf("malformed key file: %v", err)
	}
	if _, err := vault.NewLocalKEK(secret.New("c2hvcnQ=")); err == nil || !strings.Contains(err.Error(), "32 bytes") {
		t.Fatalf("short key: %v", err)
	}
}
