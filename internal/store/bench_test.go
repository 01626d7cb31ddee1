package store

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
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
	f, err := os.Create(filepath.Join(b.TempDir(), "fsync.bin"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	page := make([]byte, 4096)
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
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
// so the two are compared under the same conditions. It reports the mean of each, and the ratio.
func BenchmarkVaultPutVsFsync(b *testing.B) {
	dir := b.TempDir()
	db := mustOpen(b, testenv.Database{Driver: SQLite, DSN: filepath.Join(dir, "bench.db")})
	f, err := os.Create(filepath.Join(dir, "fsync.bin"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	ctx := context.Background()
	v := mustVault(b, db, mustKEK(b), nil)
	page := make([]byte, 4096)
	var put, sync time.Duration
	var puts []time.Duration
	for i := 0; b.Loop(); i++ {
		id, s := keyPair(i)
		start := time.Now()
		if _, err := v.Import(ctx, benchIdentity(i), id, s); err != nil {
			b.Fatal(err)
		}
		puts = append(puts, time.Since(start))
		put += puts[i]
		start = time.Now()
		if _, err := f.WriteAt(page, int64(i%256)*4096); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		sync += time.Since(start)
	}
	b.ReportMetric(float64(put.Nanoseconds())/float64(b.N), "put-ns")
	b.ReportMetric(float64(sync.Nanoseconds())/float64(b.N), "fsync-ns")
	b.ReportMetric(float64(put)/float64(sync), "put/fsync")
	slices.Sort(puts)
	b.ReportMetric(float64(puts[len(puts)*99/100].Nanoseconds()), "put-p99-ns")
	b.ReportMetric(float64(puts[len(puts)*999/1000].Nanoseconds()), "put-p999-ns")
	b.ReportMetric(float64(puts[len(puts)-1].Nanoseconds()), "put-max-ns")
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
