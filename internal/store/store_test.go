package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/secret"
	"github.com/keyward/keyward/internal/testenv"
	"github.com/keyward/keyward/internal/vault"
)

func mustOpen(t testing.TB, d testenv.Database) *DB {
	t.Helper()
	db, err := Open(context.Background(), d.Driver, d.DSN)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := db.Migrate(context.Background()); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	return db
}

func mustKEK(t testing.TB) *vault.LocalKEK {
	t.Helper()
	k, err := vault.NewLocalKEK(vault.GenerateKeyMaterial())
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func mustVault(t testing.TB, db *DB, kek vault.KEK, clock *testenv.Clock) *vault.Vault {
	t.Helper()
	opts := []vault.Option{}
	if clock != nil {
		opts = append(opts, vault.WithClock(clock.Now))
	}
	v, err := vault.New(context.Background(), db.Vault(), kek, opts...)
	if err != nil {
		t.Fatalf("vault: %v", err)
	}
	return v
}

var (
	alice = vault.Identity{Cloud: "aws", AccountID: "111122223333", UserName: "alice"}
	bob   = vault.Identity{Cloud: "aws", AccountID: "111122223333", UserName: "ci-bot"}
)

// keyPair makes a distinct, well-formed access key id and secret for n.
func keyPair(n int) (string, secret.Value) {
	return fmt.Sprintf("AKIA%016d", n), secret.New(fmt.Sprintf("Secret/%033d+", n))
}

func TestImportAndCurrent(t *testing.T) {
	testenv.ForEachDatabase(t, func(t *testing.T, d testenv.Database) {
		ctx := context.Background()
		db := mustOpen(t, d)
		clock := testenv.NewClock(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
		v := mustVault(t, db, mustKEK(t), clock)

		if _, err := v.Current(ctx, alice); !errors.Is(err, vault.ErrNotFound) {
			t.Fatalf("Current on empty vault: %v, want ErrNotFound", err)
		}
		id1, s1 := keyPair(1)
		v1, err := v.Import(ctx, alice, id1, s1)
		if err != nil {
			t.Fatal(err)
		}
		if v1.Number != 1 || v1.State != vault.StateCurrent || !v1.CurrentAt.Equal(clock.Now()) {
			t.Fatalf("first import: %+v", v1)
		}
		got, err := v.Current(ctx, alice)
		if err != nil {
			t.Fatal(err)
		}
		if got.AccessKeyID != id1 || !got.SecretAccessKey.Equal(s1) {
			t.Fatalf("Current = %s, want %s with its secret", got.AccessKeyID, id1)
		}

		clock.Add(time.Hour)
		id2, s2 := keyPair(2)
		if _, err := v.Import(ctx, alice, id2, s2); err != nil {
			t.Fatal(err)
		}
		got, err = v.Current(ctx, alice)
		if err != nil || got.AccessKeyID != id2 || !got.SecretAccessKey.Equal(s2) || got.Number != 2 {
			t.Fatalf("after second import Current = %+v, %v", got.Version, err)
		}
		old, err := v.Reveal(ctx, alice, 1)
		if err != nil {
			t.Fatal(err)
		}
		if old.State != vault.StatePrevious || !old.PreviousAt.Equal(clock.Now()) || !old.SecretAccessKey.Equal(s1) {
			t.Fatalf("first version after replacement: %+v", old.Version)
		}

		if _, err := v.Import(ctx, bob, id2, s2); !errors.Is(err, vault.ErrDuplicate) {
			t.Fatalf("importing a stored access key id again: %v, want ErrDuplicate", err)
		}
		list, err := v.List(ctx)
		if err != nil || len(list) != 2 {
			t.Fatalf("List = %v, %v; want the two versions of alice", list, err)
		}
	})
}

func TestLifecycle(t *testing.T) {
	testenv.ForEachDatabase(t, func(t *testing.T, d testenv.Database) {
		ctx := context.Background()
		db := mustOpen(t, d)
		clock := testenv.NewClock(time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC))
		v := mustVault(t, db, mustKEK(t), clock)

		id1, s1 := keyPair(10)
		if _, err := v.Import(ctx, alice, id1, s1); err != nil {
			t.Fatal(err)
		}
		id2, s2 := keyPair(11)
		p, err := v.AddPending(ctx, alice, id2, s2)
		if err != nil {
			t.Fatal(err)
		}
		if cur, _ := v.Current(ctx, alice); cur.AccessKeyID != id1 {
			t.Fatal("a pending version must not replace the current one")
		}
		if err := v.Destroy(ctx, alice, 1); !errors.Is(err, vault.ErrInvalidTransition) {
			t.Fatalf("destroying the current version: %v, want ErrInvalidTransition", err)
		}
		if err := v.Deactivate(ctx, alice, 1); !errors.Is(err, vault.ErrConflict) {
			t.Fatalf("deactivating the current version: %v, want ErrConflict", err)
		}

		clock.Add(time.Minute)
		if err := v.Promote(ctx, alice, p.Number); err != nil {
			t.Fatal(err)
		}
		if err := v.Promote(ctx, alice, p.Number); !errors.Is(err, vault.ErrConflict) {
			t.Fatalf("promoting twice: %v, want ErrConflict", err)
		}
		clock.Add(time.Minute)
		if err := v.Deactivate(ctx, alice, 1); err != nil {
			t.Fatal(err)
		}
		clock.Add(time.Minute)
		if err := v.Destroy(ctx, alice, 1); err != nil {
			t.Fatal(err)
		}
		if _, err := v.Reveal(ctx, alice, 1); !errors.Is(err, vault.ErrNoSecret) {
			t.Fatalf("revealing a destroyed version: %v, want ErrNoSecret", err)
		}
		if err := v.Destroy(ctx, alice, 1); !errors.Is(err, vault.ErrInvalidTransition) {
			t.Fatalf("destroying twice: %v, want ErrInvalidTransition", err)
		}
		if err := v.Promote(ctx, alice, 99); !errors.Is(err, vault.ErrNotFound) {
			t.Fatalf("promoting a missing version: %v, want ErrNotFound", err)
		}

		list, err := v.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
		old := list[0]
		if old.State != vault.StateDestroyed || old.HasSecret || old.AccessKeyID != id1 ||
			!old.CurrentAt.Equal(start) || !old.PreviousAt.Equal(start.Add(time.Minute)) ||
			!old.InactiveAt.Equal(start.Add(2*time.Minute)) || !old.DestroyedAt.Equal(start.Add(3*time.Minute)) {
			t.Fatalf("destroyed version keeps its metadata and transition times: %+v", old)
		}
		var kek, wrapped, ct []byte
		if err := db.sql.QueryRow(`SELECT kek_id, wrapped_key, ciphertext FROM credential_versions WHERE access_key_id = $1`, id1).
			Scan(&kek, &wrapped, &ct); err != nil {
			t.Fatal(err)
		}
		if kek != nil || wrapped != nil || ct != nil {
			t.Fatal("a destroyed version still holds sealed material")
		}
		if list[1].State != vault.StateCurrent || !list[1].CurrentAt.Equal(start.Add(time.Minute)) {
			t.Fatalf("promoted version: %+v", list[1])
		}
	})
}

// TestSealedMaterialIsBound moves one version's sealed material onto another row: decryption must
// fail, because identity, version and key id are bound in as associated data.
func TestSealedMaterialIsBound(t *testing.T) {
	testenv.ForEachDatabase(t, func(t *testing.T, d testenv.Database) {
		ctx := context.Background()
		db := mustOpen(t, d)
		v := mustVault(t, db, mustKEK(t), nil)
		ida, sa := keyPair(20)
		idb, sb := keyPair(21)
		if _, err := v.Import(ctx, alice, ida, sa); err != nil {
			t.Fatal(err)
		}
		if _, err := v.Import(ctx, bob, idb, sb); err != nil {
			t.Fatal(err)
		}
		if _, err := db.sql.Exec(`UPDATE credential_versions SET
			wrapped_key = (SELECT wrapped_key FROM credential_versions WHERE access_key_id = $1),
			ciphertext = (SELECT ciphertext FROM credential_versions WHERE access_key_id = $1)
			WHERE access_key_id = $2`, ida, idb); err != nil {
			t.Fatal(err)
		}
		_, err := v.Current(ctx, bob)
		if err == nil || !strings.Contains(err.Error(), "authentication failed") {
			t.Fatalf("sealed material moved to another identity decrypted: %v", err)
		}
		// The same within one identity, across versions.
		idc, sc := keyPair(22)
		if _, err := v.Import(ctx, alice, idc, sc); err != nil {
			t.Fatal(err)
		}
		if _, err := db.sql.Exec(`UPDATE credential_versions SET
			wrapped_key = (SELECT wrapped_key FROM credential_versions WHERE access_key_id = $1),
			ciphertext = (SELECT ciphertext FROM credential_versions WHERE access_key_id = $1)
			WHERE access_key_id = $2`, ida, idc); err != nil {
			t.Fatal(err)
		}
		if _, err := v.Current(ctx, alice); err == nil {
			t.Fatal("sealed material moved to another version decrypted")
		}
	})
}

// TestNoPlaintextAtRest reads every column of every table, and for SQLite the files, looking for
// the secret in the clear.
func TestNoPlaintextAtRest(t *testing.T) {
	testenv.ForEachDatabase(t, func(t *testing.T, d testenv.Database) {
		ctx := context.Background()
		db := mustOpen(t, d)
		v := mustVault(t, db, mustKEK(t), nil)
		id, s := keyPair(30)
		if _, err := v.Import(ctx, alice, id, s); err != nil {
			t.Fatal(err)
		}
		needle := []byte(s.Reveal())
		for _, table := range []string{"identities", "credential_versions", "schema_migrations"} {
			rows, err := db.sql.Query(`SELECT * FROM ` + table)
			if err != nil {
				t.Fatal(err)
			}
			cols, _ := rows.Columns()
			for rows.Next() {
				vals := make([]any, len(cols))
				ptrs := make([]any, len(cols))
				for i := range vals {
					ptrs[i] = &vals[i]
				}
				if err := rows.Scan(ptrs...); err != nil {
					t.Fatal(err)
				}
				for i, val := range vals {
					if bytes.Contains([]byte(fmt.Sprint(val)), needle) || bytes.Contains(asBytes(val), needle) {
						t.Errorf("%s.%s holds the secret in the clear", table, cols[i])
					}
				}
			}
			rows.Close()
		}
		if d.Driver == SQLite {
			for _, f := range []string{d.DSN, d.DSN + "-wal"} {
				data, err := os.ReadFile(f)
				if err != nil && !os.IsNotExist(err) {
					t.Fatal(err)
				}
				if bytes.Contains(data, needle) {
					t.Errorf("%s holds the secret in the clear", filepath.Base(f))
				}
			}
		}
	})
}

func asBytes(v any) []byte {
	if b, ok := v.([]byte); ok {
		return b
	}
	return nil
}

func TestWrongKEKRefused(t *testing.T) {
	testenv.ForEachDatabase(t, func(t *testing.T, d testenv.Database) {
		ctx := context.Background()
		db := mustOpen(t, d)
		v := mustVault(t, db, mustKEK(t), nil)
		id, s := keyPair(40)
		if _, err := v.Import(ctx, alice, id, s); err != nil {
			t.Fatal(err)
		}
		if _, err := vault.New(ctx, db.Vault(), mustKEK(t)); !errors.Is(err, vault.ErrKEKMismatch) {
			t.Fatalf("opening with another KEK: %v, want ErrKEKMismatch", err)
		}
	})
}

func TestRewrap(t *testing.T) {
	testenv.ForEachDatabase(t, func(t *testing.T, d testenv.Database) {
		ctx := context.Background()
		db := mustOpen(t, d)
		oldKEK, newKEK := mustKEK(t), mustKEK(t)
		v := mustVault(t, db, oldKEK, nil)
		secrets := map[vault.Identity]secret.Value{}
		for i, who := range []vault.Identity{alice, bob} {
			id, s := keyPair(50 + i)
			if _, err := v.Import(ctx, who, id, s); err != nil {
				t.Fatal(err)
			}
			secrets[who] = s
		}
		id, s := keyPair(59)
		if _, err := v.AddPending(ctx, alice, id, s); err != nil {
			t.Fatal(err)
		}
		ciphertexts := func() map[string]string {
			m := map[string]string{}
			rows, err := db.sql.Query(`SELECT access_key_id, ciphertext FROM credential_versions`)
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			for rows.Next() {
				var k string
				var c []byte
				if err := rows.Scan(&k, &c); err != nil {
					t.Fatal(err)
				}
				m[k] = string(c)
			}
			return m
		}
		signer, err := v.SigningKey(ctx, vault.PurposeAudit) // Keyward's own keys are rewrapped too
		if err != nil {
			t.Fatal(err)
		}
		before := ciphertexts()

		var calls []int
		n, err := v.Rewrap(ctx, newKEK, func(done, total int) { calls = append(calls, done*100+total) })
		if err != nil || n != 4 {
			t.Fatalf("Rewrap = %d, %v; want 4", n, err)
		}
		if fmt.Sprint(calls) != "[104 204 304 404]" {
			t.Errorf("progress calls = %v", calls)
		}
		if after := ciphertexts(); fmt.Sprint(after) != fmt.Sprint(before) {
			t.Fatal("rewrap changed a ciphertext")
		}
		if _, err := vault.New(ctx, db.Vault(), oldKEK); !errors.Is(err, vault.ErrKEKMismatch) {
			t.Fatalf("old KEK after rewrap: %v, want ErrKEKMismatch", err)
		}
		reopened := mustVault(t, db, newKEK, nil)
		for who, s := range secrets {
			c, err := reopened.Current(ctx, who)
			if err != nil || !c.SecretAccessKey.Equal(s) {
				t.Fatalf("%s after rewrap: %v", who, err)
			}
		}
		if _, err := reopened.Rewrap(ctx, newKEK, nil); err == nil {
			t.Fatal("rewrap to the KEK in use must be refused")
		}
		if k, err := reopened.SigningKey(ctx, vault.PurposeAudit); err != nil || k.ID != signer.ID {
			t.Fatalf("the audit signing key after rewrap: %v, %v", k.ID, err)
		}
	})
}

// TestRewrapIsAllOrNothing fails the rewrap half-way: no row may be left under the new KEK.
func TestRewrapIsAllOrNothing(t *testing.T) {
	testenv.ForEachDatabase(t, func(t *testing.T, d testenv.Database) {
		ctx := context.Background()
		db := mustOpen(t, d)
		oldKEK := mustKEK(t)
		v := mustVault(t, db, oldKEK, nil)
		for i := range 4 {
			id, s := keyPair(60 + i)
			if _, err := v.Import(ctx, alice, id, s); err != nil {
				t.Fatal(err)
			}
		}
		failing := &failingKEK{KEK: mustKEK(t), after: 2}
		if _, err := v.Rewrap(ctx, failing, nil); err == nil {
			t.Fatal("rewrap with a failing KEK succeeded")
		}
		ids, err := db.Vault().KEKIDs(ctx)
		if err != nil || len(ids) != 1 || ids[0] != oldKEK.ID() {
			t.Fatalf("after a failed rewrap KEK ids = %v, %v; want only the old one", ids, err)
		}
		if _, err := v.Current(ctx, alice); err != nil {
			t.Fatalf("vault unusable after a failed rewrap: %v", err)
		}
	})
}

type failingKEK struct {
	vault.KEK
	after, n int
}

func (f *failingKEK) Wrap(ctx context.Context, dek, aad []byte) ([]byte, error) {
	if f.n++; f.n > f.after {
		return nil, errors.New("injected failure")
	}
	return f.KEK.Wrap(ctx, dek, aad)
}

// TestConcurrentImports races writers on one identity: every write lands with its own version
// number, and exactly one version is current.
func TestConcurrentImports(t *testing.T) {
	testenv.ForEachDatabase(t, func(t *testing.T, d testenv.Database) {
		ctx := context.Background()
		db := mustOpen(t, d)
		v := mustVault(t, db, mustKEK(t), nil)
		// Twice the SQLite pool: a transaction must never wait for a connection the others hold.
		const writers = 16
		var wg sync.WaitGroup
		errs := make(chan error, writers)
		for i := range writers {
			wg.Go(func() {
				id, s := keyPair(100 + i)
				_, err := v.Import(ctx, alice, id, s)
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		list, err := v.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		current := 0
		for i, ver := range list {
			if ver.Number != int64(i+1) {
				t.Errorf("version numbers not 1..%d: %d at %d", writers, ver.Number, i)
			}
			if ver.State == vault.StateCurrent {
				current++
			}
		}
		if len(list) != writers || current != 1 {
			t.Fatalf("%d versions, %d current; want %d and 1", len(list), current, writers)
		}
	})
}

func TestLookup(t *testing.T) {
	testenv.ForEachDatabase(t, func(t *testing.T, d testenv.Database) {
		ctx := context.Background()
		db := mustOpen(t, d)
		v := mustVault(t, db, mustKEK(t), nil)
		other := vault.Identity{Cloud: "aws", AccountID: "444455556666", UserName: "alice"}
		for i, who := range []vault.Identity{alice, other, bob} {
			id, s := keyPair(70 + i)
			if _, err := v.Import(ctx, who, id, s); err != nil {
				t.Fatal(err)
			}
		}
		if got, err := v.Lookup(ctx, "ci-bot", ""); err != nil || got != bob {
			t.Errorf("Lookup(ci-bot) = %v, %v", got, err)
		}
		if _, err := v.Lookup(ctx, "alice", ""); !errors.Is(err, vault.ErrAmbiguous) ||
			!strings.Contains(err.Error(), "111122223333") || !strings.Contains(err.Error(), "444455556666") {
			t.Errorf("Lookup(alice) without account: %v; want ErrAmbiguous naming both accounts", err)
		}
		if got, err := v.Lookup(ctx, "alice", "444455556666"); err != nil || got != other {
			t.Errorf("Lookup(alice, 444455556666) = %v, %v", got, err)
		}
		if _, err := v.Lookup(ctx, "nobody", ""); !errors.Is(err, vault.ErrNotFound) {
			t.Errorf("Lookup(nobody) = %v, want ErrNotFound", err)
		}
	})
}

func TestValidation(t *testing.T) {
	testenv.ForEachDatabase(t, func(t *testing.T, d testenv.Database) {
		ctx := context.Background()
		db := mustOpen(t, d)
		v := mustVault(t, db, mustKEK(t), nil)
		goodID, goodSecret := keyPair(80)
		tests := []struct {
			name   string
			who    vault.Identity
			keyID  string
			secret secret.Value
			want   string
		}{
			{"bad account", vault.Identity{Cloud: "aws", AccountID: "12345", UserName: "a"}, goodID, goodSecret, `account id "12345"`},
			{"bad user", vault.Identity{Cloud: "aws", AccountID: "111122223333", UserName: "a b"}, goodID, goodSecret, `user name "a b"`},
			{"other cloud", vault.Identity{Cloud: "gcp", AccountID: "111122223333", UserName: "a"}, goodID, goodSecret, `cloud "gcp"`},
			{"temporary key", alice, "ASIAABCDEFGHIJKLMNOP", goodSecret, "temporary"},
			{"bad key id", alice, "AKIAshort", goodSecret, `access key id "AKIAshort"`},
			{"empty secret", alice, goodID, secret.Value{}, "empty"},
			{"short secret", alice, goodID, secret.New("tooShort"), "8 characters"},
			{"secret with space", alice, goodID, secret.New("abcdefghij klmnopqrstu"), "spaces"},
		}
		for _, tt := range tests {
			if _, err := v.Import(ctx, tt.who, tt.keyID, tt.secret); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("%s: %v, want error containing %q", tt.name, err, tt.want)
			}
		}
		if list, _ := v.List(ctx); len(list) != 0 {
			t.Fatalf("rejected imports wrote %d versions", len(list))
		}
	})
}

// TestAdopt records a key that predates Keyward: current, no secret, replaced like any other.
func TestAdopt(t *testing.T) {
	testenv.ForEachDatabase(t, func(t *testing.T, d testenv.Database) {
		ctx := context.Background()
		db := mustOpen(t, d)
		v := mustVault(t, db, mustKEK(t), nil)
		created := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
		id1, _ := keyPair(90)
		adopted, err := v.Adopt(ctx, alice, id1, created)
		if err != nil {
			t.Fatal(err)
		}
		if adopted.State != vault.StateCurrent || adopted.HasSecret || adopted.Origin != vault.OriginAdopted || !adopted.CreatedAt.Equal(created) {
			t.Fatalf("adopted version: %+v", adopted)
		}
		if _, err := v.Current(ctx, alice); !errors.Is(err, vault.ErrNoSecret) {
			t.Fatalf("Current of an adopted key: %v, want ErrNoSecret", err)
		}
		// An adopted version names no key-encryption key: the vault must still open with its KEK.
		if ids, err := db.Vault().KEKIDs(ctx); err != nil || len(ids) != 0 {
			t.Fatalf("KEK ids after adopting = %q, %v; want none", ids, err)
		}
		id2, s2 := keyPair(91)
		p, err := v.AddPending(ctx, alice, id2, s2)
		if err != nil {
			t.Fatal(err)
		}
		if err := v.Promote(ctx, alice, p.Number); err != nil {
			t.Fatal(err)
		}
		versions, err := v.VersionsOf(ctx, alice)
		if err != nil || len(versions) != 2 || versions[0].State != vault.StatePrevious || versions[1].State != vault.StateCurrent || !versions[1].HasSecret {
			t.Fatalf("VersionsOf after replacing an adopted key: %+v, %v", versions, err)
		}
		if none, err := v.VersionsOf(ctx, bob); err != nil || len(none) != 0 {
			t.Fatalf("VersionsOf an unknown identity: %v, %v", none, err)
		}
		// Only an adopted version may lack its secret.
		if _, err := db.sql.Exec(`UPDATE credential_versions SET wrapped_key = NULL, ciphertext = NULL WHERE access_key_id = $1`, id2); err == nil {
			t.Fatal("the schema let a created version lose its secret without being destroyed")
		}
	})
}

// TestImportSecretOfAdoptedKey: an operator who holds the secret of a key Keyward adopted imports it;
// the secret joins that version instead of making a new one.
func TestImportSecretOfAdoptedKey(t *testing.T) {
	testenv.ForEachDatabase(t, func(t *testing.T, d testenv.Database) {
		ctx := context.Background()
		db := mustOpen(t, d)
		v := mustVault(t, db, mustKEK(t), nil)
		keyID, s := keyPair(95)
		adopted, err := v.Adopt(ctx, alice, keyID, time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := v.Import(ctx, bob, keyID, s); !errors.Is(err, vault.ErrDuplicate) {
			t.Fatalf("importing alice's adopted key under bob: %v, want ErrDuplicate", err)
		}
		got, err := v.Import(ctx, alice, keyID, s)
		if err != nil || got.Number != adopted.Number || got.State != vault.StateCurrent {
			t.Fatalf("import of an adopted key = %+v, %v", got, err)
		}
		cur, err := v.Current(ctx, alice)
		if err != nil || !cur.SecretAccessKey.Equal(s) || cur.AccessKeyID != keyID {
			t.Fatalf("Current after importing the adopted key's secret: %v", err)
		}
		if versions, _ := v.VersionsOf(ctx, alice); len(versions) != 1 {
			t.Fatalf("import made a new version: %+v", versions)
		}
		if _, err := v.Import(ctx, alice, keyID, s); !errors.Is(err, vault.ErrDuplicate) {
			t.Fatalf("importing it twice: %v, want ErrDuplicate", err)
		}
	})
}
