package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/testenv"
	"github.com/keyward/keyward/internal/vault"
)

// The vault's two hot paths on both drivers, and the cost of one fsync on the disk the SQLite file
// lives on, measured in the same run so that durable Put can be compared with it. docs/BENCHMARKS.md
// has the figures and the command.

const benchUsers = 100

// forEachBenchDatabase runs fn on a fresh database of each driver, made anew for every run.
func forEachBenchDatabase(b *testing.B, fn func(b *testing.B, db *DB)) {
	for _, driver := range []string{SQLite, Postgres} {
		b.Run(driver, func(b *testing.B) {
			d := testenv.Database{Driver: SQLite, DSN: filepath.Join(b.TempDir(), "bench.db")}
			if driver == Postgres {
				d = testenv.Database{Driver: Postgres, DSN: testenv.PostgresDSN(b)}
			}
			fn(b, mustOpen(b, d))
		})
	}
}

func benchIdentity(i int) vault.Identity {
	return vault.Identity{Cloud: "aws", AccountID: "123456789012", UserName: fmt.Sprintf("user-%03d", i%benchUsers)}
}

// BenchmarkFsync writes one 4 KiB page and fsyncs it, next to where the SQLite database lives.
func BenchmarkFsync(b *testing.B) {
	fsync := pageSyncer(b, b.TempDir())
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		fsync(i)
	}
}

// pageSyncer returns the reference fsync the Put is compared with: its i-th call writes a 4 KiB page
// (one of 256) of a file in dir, and fsyncs the file.
func pageSyncer(b *testing.B, dir string) func(i int) {
	f, err := os.Create(filepath.Join(dir, "fsync.bin"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	page := make([]byte, 4096)
	return func(i int) {
		if _, err := f.WriteAt(page, int64(i%256)*4096); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVaultPut stores a new current version (seal + one durable transaction) per iteration.
func BenchmarkVaultPut(b *testing.B) {
	forEachBenchDatabase(b, func(b *testing.B, db *DB) {
		ctx := context.Background()
		v := mustVault(b, db, mustKEK(b), nil)
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			id, s := keyPair(i)
			if _, err := v.Import(ctx, benchIdentity(i), id, s); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkVaultPutVsFsync alternates a durable Put on SQLite with a 4 KiB write and fsync of a file
// beside the database, and times each: this disk's speed drifts by tens of percent within minutes,
// so the two are compared under the same conditions. It reports the mean of each, the ratio, and
// the Put's tail.
//
// Two more runs take the Put apart, for docs/BENCHMARKS.md (neither is a durable Put):
//   - no-log-fsync: the same Put with the committer's fsync of the log left out, so what remains
//     is the Put's own work (encryption, SQL, SQLite's checkpoints);
//   - sql-only: only the statements an import runs (BEGIN IMMEDIATE, the key's lookup, the next
//     version number, the demotion of the current version, the insert, COMMIT), prepared once and
//     run through database/sql on the migrated schema with SQLite's checkpoints off: what
//     modernc.org/sqlite alone costs, with nothing of Keyward around it.
func BenchmarkVaultPutVsFsync(b *testing.B) {
	b.Run("durable", func(b *testing.B) {
		db, dir := benchSQLite(b)
		putVsFsync(b, dir, vaultImport(b, db))
	})
	b.Run("no-log-fsync", func(b *testing.B) {
		db, dir := benchSQLite(b)
		db.syncWAL = func() error { return nil }
		putVsFsync(b, dir, vaultImport(b, db))
	})
	b.Run("sql-only", func(b *testing.B) {
		db, dir := benchSQLite(b)
		putVsFsync(b, dir, sqlImport(b, db))
	})
}

func benchSQLite(b *testing.B) (*DB, string) {
	dir := b.TempDir()
	return mustOpen(b, testenv.Database{Driver: SQLite, DSN: filepath.Join(dir, "bench.db")}), dir
}

// vaultImport returns a function that imports the i-th key as current, through the vault.
func vaultImport(b *testing.B, db *DB) func(i int) error {
	v := mustVault(b, db, mustKEK(b), nil)
	return func(i int) error {
		id, s := keyPair(i)
		_, err := v.Import(context.Background(), benchIdentity(i), id, s)
		return err
	}
}

// sqlImport returns a function that runs the statements of the i-th key's import (see
// BenchmarkVaultPutVsFsync), with random bytes of a sealed secret's sizes.
func sqlImport(b *testing.B, db *DB) func(i int) error {
	ctx := context.Background()
	conn, err := db.sql.Conn(ctx)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	if _, err := conn.ExecContext(ctx, "PRAGMA wal_autocheckpoint = 0"); err != nil {
		b.Fatal(err)
	}
	prepare := func(query string) *sql.Stmt {
		st, err := conn.PrepareContext(ctx, query)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { st.Close() })
		return st
	}
	var (
		begin   = prepare(`BEGIN IMMEDIATE`)
		byKey   = prepare(`SELECT v.version FROM credential_versions v JOIN identities i ON i.id = v.identity_id WHERE v.access_key_id = $1`)
		next    = prepare(`SELECT MAX(version) FROM credential_versions WHERE identity_id = (` + identityByName + `)`)
		demote  = prepare(`UPDATE credential_versions SET state = 'previous', previous_at = $1 WHERE identity_id = $2 AND state = 'current'`)
		insert  = prepare(`INSERT INTO credential_versions (identity_id, version, access_key_id, state, origin, kek_id, wrapped_key, ciphertext, created_at, current_at) VALUES ($1, $2, $3, 'current', 'imported', 'local', $4, $5, $6, $6)`)
		commit  = prepare(`COMMIT`)
		newUser = prepare(`INSERT INTO identities (cloud, account_id, user_name, created_at) VALUES ($1, $2, $3, 0) RETURNING id`)
	)
	rowIDs := map[vault.Identity]int64{}
	wrapped, sealed := make([]byte, 60), make([]byte, 56)
	return func(i int) error {
		id, _ := keyPair(i)
		who := benchIdentity(i)
		rand.Read(wrapped)
		rand.Read(sealed)
		if _, err := begin.Exec(); err != nil {
			return err
		}
		var n sql.NullInt64
		switch err := byKey.QueryRow(id).Scan(&n); {
		case err == nil:
			return fmt.Errorf("%s is stored already", id)
		case !errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("lookup of %s: %w", id, err)
		}
		if err := next.QueryRow(who.Cloud, who.AccountID, who.UserName).Scan(&n); err != nil {
			return err
		}
		rowID, ok := rowIDs[who]
		if !ok {
			if err := newUser.QueryRow(who.Cloud, who.AccountID, who.UserName).Scan(&rowID); err != nil {
				return err
			}
			rowIDs[who] = rowID
		}
		now := time.Now().UnixMicro()
		if _, err := demote.Exec(now, rowID); err != nil {
			return err
		}
		if _, err := insert.Exec(rowID, n.Int64+1, id, wrapped, sealed, now); err != nil {
			return err
		}
		_, err := commit.Exec()
		return err
	}
}

// putVsFsync alternates put with a 4 KiB write and fsync of a file in dir (see
// BenchmarkVaultPutVsFsync) and reports both.
func putVsFsync(b *testing.B, dir string, put func(i int) error) {
	fsync := pageSyncer(b, dir)
	var total, sync time.Duration
	var puts []time.Duration
	for i := 0; b.Loop(); i++ {
		start := time.Now()
		if err := put(i); err != nil {
			b.Fatal(err)
		}
		puts = append(puts, time.Since(start))
		total += puts[i]
		start = time.Now()
		fsync(i)
		sync += time.Since(start)
	}
	b.ReportMetric(float64(total.Nanoseconds())/float64(b.N), "put-ns")
	b.ReportMetric(float64(sync.Nanoseconds())/float64(b.N), "fsync-ns")
	b.ReportMetric(float64(total)/float64(sync), "put/fsync")
	slices.Sort(puts)
	b.ReportMetric(float64(puts[len(puts)*99/100].Nanoseconds()), "put-p99-ns")
	b.ReportMetric(float64(puts[len(puts)*999/1000].Nanoseconds()), "put-p999-ns")
	b.ReportMetric(float64(puts[len(puts)-1].Nanoseconds()), "put-max-ns")
}

// BenchmarkVaultPutParallel imports keys from 8 goroutines at once on SQLite, each Put durable when
// it returns: the committer writes whoever is waiting in one transaction and one fsync (group
// commit). ns/op is wall time per Put, which is throughput, not one Put's latency; fsync-ns is
// measured on the same disk, in the same run, before and after.
func BenchmarkVaultPutParallel(b *testing.B) {
	db, dir := benchSQLite(b)
	put := vaultImport(b, db)
	fsync := pageSyncer(b, dir)
	fsyncs := func() time.Duration {
		start := time.Now()
		for i := range 200 {
			fsync(i)
		}
		return time.Since(start) / 200
	}
	before := fsyncs()
	var n atomic.Int64
	b.SetParallelism(4) // 4 × GOMAXPROCS goroutines
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := put(int(n.Add(1))); err != nil {
				b.Error(err)
				return
			}
		}
	})
	perPut := time.Since(start) / time.Duration(b.N)
	b.StopTimer()
	sync := (before + fsyncs()) / 2
	b.ReportMetric(float64(sync.Nanoseconds()), "fsync-ns")
	b.ReportMetric(float64(perPut)/float64(sync), "put/fsync")
}

// BenchmarkVaultGet reads and decrypts a current credential per iteration.
func BenchmarkVaultGet(b *testing.B) {
	forEachBenchDatabase(b, func(b *testing.B, db *DB) {
		ctx := context.Background()
		v := mustVault(b, db, mustKEK(b), nil)
		for i := range benchUsers {
			id, s := keyPair(i)
			if _, err := v.Import(ctx, benchIdentity(i), id, s); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if _, err := v.Current(ctx, benchIdentity(i)); err != nil {
				b.Fatal(err)
			}
		}
	})
}
