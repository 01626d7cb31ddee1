package store

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/keyward/keyward/internal/testenv"
)

// TestConcurrentMigrate starts several migrators at once on an empty database, each with its own
// connections as separate processes would have: all succeed and every migration is applied once.
func TestConcurrentMigrate(t *testing.T) {
	testenv.ForEachDatabase(t, func(t *testing.T, d testenv.Database) {
		ctx := context.Background()
		const n = 4
		var wg sync.WaitGroup
		applied := make(chan int, n)
		errs := make(chan error, n)
		for range n {
			db, err := Open(ctx, d.Driver, d.DSN)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			wg.Go(func() {
				ms, err := db.Migrate(ctx)
				errs <- err
				applied <- len(ms)
			})
		}
		wg.Wait()
		close(errs)
		close(applied)
		for err := range errs {
			if err != nil {
				t.Fatalf("concurrent migrate: %v", err)
			}
		}
		total := 0
		for k := range applied {
			total += k
		}
		if total != len(migrations) {
			t.Fatalf("%d migrations applied in all, want %d (each exactly once)", total, len(migrations))
		}
		db := mustOpen(t, d)
		var rows int
		if err := db.sql.QueryRow(`SELECT COUNT(*) FROM schema_migrations`).Scan(&rows); err != nil || rows != len(migrations) {
			t.Fatalf("schema_migrations has %d rows (%v), want %d", rows, err, len(migrations))
		}
		if again, err := db.Migrate(ctx); err != nil || len(again) != 0 {
			t.Fatalf("second Migrate = %v, %v; want nothing to do", again, err)
		}
	})
}

func TestReady(t *testing.T) {
	testenv.ForEachDatabase(t, func(t *testing.T, d testenv.Database) {
		ctx := context.Background()
		db, err := Open(ctx, d.Driver, d.DSN)
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Ready(ctx); !errors.Is(err, ErrNotMigrated) {
			t.Fatalf("Ready before migrate = %v, want ErrNotMigrated", err)
		}
		if _, err := db.Migrate(ctx); err != nil {
			t.Fatal(err)
		}
		if err := db.Ready(ctx); err != nil {
			t.Fatalf("Ready after migrate = %v", err)
		}
		// A database migrated by a newer Keyward is not ours to use.
		if _, err := db.sql.Exec(`INSERT INTO schema_migrations (version, name, applied_at) VALUES (9999, 'future', 0)`); err != nil {
			t.Fatal(err)
		}
		if err := db.Ready(ctx); !errors.Is(err, ErrNotMigrated) {
			t.Fatalf("Ready with a newer schema = %v", err)
		}
		if _, err := db.Migrate(ctx); err == nil || !strings.Contains(err.Error(), "newer than this binary") {
			t.Fatalf("Migrate with a newer schema = %v", err)
		}
		db.Close()
		if err := db.Ready(ctx); err == nil {
			t.Fatal("Ready on a closed database succeeded")
		}
	})
}

func TestSQLiteFileIsPrivate(t *testing.T) {
	path := t.TempDir() + "/keyward.db"
	db := mustOpen(t, testenv.Database{Driver: SQLite, DSN: path})
	defer db.Close()
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Fatalf("database file mode %v, want 0600", info.Mode().Perm())
	}
	var mode, sync string
	if err := db.sql.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
		t.Fatalf("journal_mode = %q, %v", mode, err)
	}
	// NORMAL: SQLite makes no fsync at commit; the committer fsyncs the log (TestCommitAnsweredOnceDurable).
	if err := db.sql.QueryRow(`PRAGMA synchronous`).Scan(&sync); err != nil || sync != "1" {
		t.Fatalf("synchronous = %q (1 is NORMAL), %v", sync, err)
	}
}

// TestSQLiteShreddingReachesTheFile destroys a version and checks that its sealed material is gone
// from the database file and its WAL, not only from query results.
func TestSQLiteShreddingReachesTheFile(t *testing.T) {
	ctx := context.Background()
	path := t.TempDir() + "/keyward.db"
	db := mustOpen(t, testenv.Database{Driver: SQLite, DSN: path})
	v := mustVault(t, db, mustKEK(t), nil)
	id1, s1 := keyPair(1)
	id2, s2 := keyPair(2)
	if _, err := v.Import(ctx, alice, id1, s1); err != nil {
		t.Fatal(err)
	}
	var ct []byte
	if err := db.sql.QueryRow(`SELECT ciphertext FROM credential_versions WHERE access_key_id = $1`, id1).Scan(&ct); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Import(ctx, alice, id2, s2); err != nil {
		t.Fatal(err)
	}
	fileHolds := func() bool {
		var all []byte
		for _, f := range []string{path, path + "-wal"} {
			data, _ := os.ReadFile(f)
			all = append(all, data...)
		}
		return bytes.Contains(all, ct)
	}
	if !fileHolds() {
		t.Fatal("test is blind: the ciphertext was never found in the files")
	}
	if err := v.Destroy(ctx, alice, 1); err != nil {
		t.Fatal(err)
	}
	if fileHolds() {
		t.Fatal("the destroyed version's ciphertext is still in the database files")
	}
}

// TestConnectErrorHidesPassword makes sure a failed PostgreSQL connection does not print the password.
func TestConnectErrorHidesPassword(t *testing.T) {
	_, err := Open(context.Background(), Postgres, "postgres://keyward:s3cretpw@127.0.0.1:1/keyward?sslmode=disable&connect_timeout=2")
	if err == nil {
		t.Fatal("connected to a closed port")
	}
	if strings.Contains(err.Error(), "s3cretpw") {
		t.Fatalf("error shows the password: %v", err)
	}
}

// TestDeliverStepMigration upgrades a database holding rotations to the schema with the deliver
// step (SQLite makes the table again): rows and ids are kept, new ids follow them, deliver is allowed.
func TestDeliverStepMigration(t *testing.T) {
	testenv.ForEachDatabase(t, func(t *testing.T, d testenv.Database) {
		ctx := context.Background()
		all := migrations
		migrations = all[:7]
		db := mustOpen(t, d)
		migrations = all
		var old int64
		if err := db.sql.QueryRowContext(ctx, `INSERT INTO rotations (cloud, account_id, user_name, step, phase, attempt, started_at, step_at)
			VALUES ('aws', '1', 'alice', 'verify', 'started', 1, 1, 1) RETURNING id`).Scan(&old); err != nil {
			t.Fatal(err)
		}
		if _, err := db.Migrate(ctx); err != nil {
			t.Fatal(err)
		}
		var user string
		if err := db.sql.QueryRowContext(ctx, `SELECT user_name FROM rotations WHERE id = $1`, old).Scan(&user); err != nil || user != "alice" {
			t.Fatalf("the rotation did not survive the migration: %q %v", user, err)
		}
		if _, err := db.sql.ExecContext(ctx, `UPDATE rotations SET step = 'deliver' WHERE id = $1`, old); err != nil {
			t.Fatalf("step deliver refused: %v", err)
		}
		if _, err := db.sql.ExecContext(ctx, `UPDATE rotations SET step = 'bogus' WHERE id = $1`, old); err == nil {
			t.Fatal("the step check is gone")
		}
		var id int64
		if err := db.sql.QueryRowContext(ctx, `INSERT INTO rotations (cloud, account_id, user_name, step, phase, attempt, started_at, step_at)
			VALUES ('aws', '1', 'bob', 'create', 'started', 1, 1, 1) RETURNING id`).Scan(&id); err != nil || id <= old {
			t.Fatalf("a new rotation got id %d (%v), want one after %d", id, err, old)
		}
	})
}
