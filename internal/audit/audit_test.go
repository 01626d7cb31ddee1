package audit_test

import (
	"context"
	"crypto/ed25519"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/secret"
	"github.com/keyward/keyward/internal/store"
	"github.com/keyward/keyward/internal/store/storetest"
	"github.com/keyward/keyward/internal/testenv"
	"github.com/keyward/keyward/internal/vault"
)

type world struct {
	db     *store.DB
	raw    *sql.DB // the same database, opened beside Keyward, as someone tampering with it would
	trail  *audit.Trail
	signer vault.SigningKey
	keys   map[string]ed25519.PublicKey
	clock  *testenv.Clock
}

func newWorld(t *testing.T, d testenv.Database) *world {
	t.Helper()
	ctx := context.Background()
	db := storetest.Open(t, d)
	kek, err := vault.NewLocalKEK(secret.New("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="))
	if err != nil {
		t.Fatal(err)
	}
	clock := testenv.NewClock(time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC))
	v, err := vault.New(ctx, db.Vault(), kek, vault.WithClock(clock.Now))
	if err != nil {
		t.Fatal(err)
	}
	signer, err := v.SigningKey(ctx, vault.PurposeAudit)
	if err != nil {
		t.Fatal(err)
	}
	again, err := v.SigningKey(ctx, vault.PurposeAudit)
	if err != nil || again.ID != signer.ID {
		t.Fatalf("a second SigningKey made another key: %v %v", again.ID, err)
	}
	driver := map[string]string{store.SQLite: "sqlite", store.Postgres: "pgx"}[d.Driver]
	dsn := d.DSN
	if d.Driver == store.SQLite {
		dsn = "file:" + d.DSN + "?_pragma=busy_timeout(5000)"
	}
	raw, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	return &world{db: db, raw: raw, trail: audit.New(db.Audit(), clock.Now, nil), signer: signer,
		keys: map[string]ed25519.PublicKey{signer.ID: signer.Public}, clock: clock}
}

func (w *world) record(t *testing.T, n int) {
	t.Helper()
	for i := range n {
		w.clock.Add(time.Second)
		err := w.trail.Record(context.Background(), audit.Event{Actor: "engine:test", Action: "key.rotated",
			Target: fmt.Sprintf("aws:123456789012:user-%d", i), Outcome: audit.Success,
			Detail: map[string]string{"old_key_id": "AKIAOLD", "new_key_id": "AKIANEW"}})
		if err != nil {
			t.Fatal(err)
		}
	}
}

func (w *world) checkpoint(t *testing.T) audit.Checkpoint {
	t.Helper()
	c, err := w.trail.Checkpoint(context.Background(), w.signer)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (w *world) verify(t *testing.T) audit.Report {
	t.Helper()
	rep, err := w.trail.Verify(context.Background(), audit.Ed25519Verifier(w.keys), nil)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func (w *world) exec(t *testing.T, query string, args ...any) {
	t.Helper()
	if _, err := w.raw.Exec(query, args...); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
}

func TestIntactTrailVerifies(t *testing.T) {
	testenv.ForEachDatabase(t, func(t *testing.T, d testenv.Database) {
		w := newWorld(t, d)
		if rep := w.verify(t); !rep.OK() || rep.Records != 0 {
			t.Fatalf("empty trail: %+v", rep)
		}
		w.record(t, 5)
		c := w.checkpoint(t)
		if c.Seq != 5 {
			t.Fatalf("checkpoint at %d, want 5", c.Seq)
		}
		if again := w.checkpoint(t); again.Seq != 5 || again.Time != c.Time {
			t.Fatal("a second checkpoint of the same end was written")
		}
		w.record(t, 3) // records after the last checkpoint are fine too
		if rep := w.verify(t); !rep.OK() || rep.Records != 8 || rep.Checkpoints != 1 {
			t.Fatalf("intact trail: %+v", rep)
		}
	})
}

// TestTamperingIsDetected changes the database behind Keyward's back in every way the issue names,
// and checks that verification names the first record at fault.
func TestTamperingIsDetected(t *testing.T) {
	cases := []struct {
		name   string
		tamper func(t *testing.T, w *world)
		badSeq int64
		says   string
	}{
		{"changed", func(t *testing.T, w *world) {
			w.exec(t, `UPDATE audit_events SET actor = 'someone-else' WHERE seq = 4`)
		}, 4, "was changed"},
		{"changed detail", func(t *testing.T, w *world) {
			w.exec(t, `UPDATE audit_events SET detail = '{"new_key_id":"AKIAOTHER"}' WHERE seq = 2`)
		}, 2, "was changed"},
		{"detail not JSON", func(t *testing.T, w *world) {
			w.exec(t, `UPDATE audit_events SET detail = 'not json at all' WHERE seq = 2`)
		}, 2, "record 2 was changed: its detail is not valid JSON"},
		{"detail not an object of strings", func(t *testing.T, w *world) {
			w.exec(t, `UPDATE audit_events SET detail = '{"n": 7}' WHERE seq = 3`)
		}, 3, "record 3 was changed: its detail is not a JSON object of strings"},
		{"removed", func(t *testing.T, w *world) {
			w.exec(t, `DELETE FROM audit_events WHERE seq = 3`)
		}, 3, "missing"},
		{"removed and renumbered", func(t *testing.T, w *world) {
			w.exec(t, `DELETE FROM audit_events WHERE seq = 3`)
			for seq := 4; seq <= 6; seq++ {
				w.exec(t, `UPDATE audit_events SET seq = $1 WHERE seq = $2`, seq-1, seq)
			}
		}, 3, "chain is broken"},
		{"inserted", func(t *testing.T, w *world) {
			// The forger knows the hash function: the forged record itself hashes right.
			for seq := 6; seq >= 4; seq-- {
				w.exec(t, `UPDATE audit_events SET seq = $1 WHERE seq = $2`, seq+1, seq)
			}
			var prev string
			if err := w.raw.QueryRow(`SELECT hash FROM audit_events WHERE seq = 3`).Scan(&prev); err != nil {
				t.Fatal(err)
			}
			forged := audit.Record{Seq: 4, Time: time.Date(2026, 11, 1, 12, 0, 3, 500, time.UTC).Truncate(time.Microsecond),
				Event: audit.Event{Actor: "forger", Action: "key.read", Target: "x", Outcome: audit.Success}, PrevHash: prev}
			forged.Hash = forged.ComputeHash()
			w.exec(t, `INSERT INTO audit_events (seq, time, actor, action, target, outcome, source_ip, request_id, detail, prev_hash, hash)
				VALUES ($1, $2, $3, $4, $5, $6, '', '', '', $7, $8)`, forged.Seq, forged.Time.UnixMicro(), forged.Actor,
				forged.Action, forged.Target, forged.Outcome, forged.PrevHash, forged.Hash)
		}, 5, "chain is broken"},
		{"reordered", func(t *testing.T, w *world) {
			w.exec(t, `UPDATE audit_events SET seq = 100 WHERE seq = 2`)
			w.exec(t, `UPDATE audit_events SET seq = 2 WHERE seq = 5`)
			w.exec(t, `UPDATE audit_events SET seq = 5 WHERE seq = 100`)
		}, 2, ""},
		{"tail cut off", func(t *testing.T, w *world) {
			w.exec(t, `DELETE FROM audit_events WHERE seq >= 5`)
		}, 5, "tail was cut off"},
		{"rewritten with the chain recomputed", func(t *testing.T, w *world) {
			// Change record 2 and recompute every hash after it: only the signed checkpoint catches it.
			recs := map[int64]audit.Record{}
			if err := w.db.Audit().Records(context.Background(), 1, 0, func(r audit.Record) error { recs[r.Seq] = r; return nil }); err != nil {
				t.Fatal(err)
			}
			prev := recs[1].Hash
			for seq := int64(2); seq <= 6; seq++ {
				r := recs[seq]
				if seq == 2 {
					r.Actor = "someone-else"
				}
				r.PrevHash = prev
				r.Hash = r.ComputeHash()
				prev = r.Hash
				w.exec(t, `UPDATE audit_events SET actor = $1, prev_hash = $2, hash = $3 WHERE seq = $4`, r.Actor, r.PrevHash, r.Hash, seq)
			}
		}, 6, "does not match the signed checkpoint"},
		{"forged checkpoint", func(t *testing.T, w *world) {
			w.exec(t, `UPDATE audit_checkpoints SET seq = 3`)
		}, 3, "not signed by a known audit key"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			testenv.ForEachDatabase(t, func(t *testing.T, d testenv.Database) {
				w := newWorld(t, d)
				w.record(t, 6)
				w.checkpoint(t)
				if rep := w.verify(t); !rep.OK() {
					t.Fatalf("before tampering: %+v", rep)
				}
				tc.tamper(t, w)
				rep := w.verify(t)
				if rep.OK() || rep.BadSeq != tc.badSeq || !strings.Contains(rep.Problem, tc.says) {
					t.Fatalf("after tampering: %+v; want record %d named, saying %q", rep, tc.badSeq, tc.says)
				}
			})
		})
	}
}

// TestConcurrentAppendsKeepOneChain: 16 writers (on PostgreSQL, 16 connections) append at once,
// some in units of work that roll back, while sealers and readers run beside them (as other
// replicas would). The trail ends as one chain holding every committed record exactly once and no
// rolled-back one, it verifies, and a record changed afterwards is still caught.
func TestConcurrentAppendsKeepOneChain(t *testing.T) {
	testenv.ForEachDatabase(t, func(t *testing.T, d testenv.Database) {
		const writers, each = 16, 25
		w := newWorld(t, d)
		ctx := context.Background()
		errRollback := errors.New("roll back")
		stop := make(chan struct{})
		var wg, readers sync.WaitGroup
		errs := make(chan error, writers+2)
		for range 2 { // sealing and reading while the writers write
			readers.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					if _, err := w.trail.Seal(ctx); err != nil {
						errs <- err
						return
					}
					if _, _, err := w.trail.Find(ctx, audit.Filter{Action: "test", Limit: 10}); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		for g := range writers {
			wg.Go(func() {
				for i := range each {
					e := audit.Event{Actor: fmt.Sprintf("g%d", g), Action: "test", Target: fmt.Sprintf("t%d", i), Outcome: audit.Success}
					err := w.db.Atomically(ctx, func(ctx context.Context) error {
						if err := w.trail.Record(ctx, e); err != nil {
							return err
						}
						if i%5 == 4 {
							return errRollback // this one never happened
						}
						return nil
					})
					if err != nil && !errors.Is(err, errRollback) {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(stop)
		readers.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		want := writers * each * 4 / 5
		if rep := w.verify(t); !rep.OK() || rep.Records != int64(want) {
			t.Fatalf("%+v, want %d records", rep, want)
		}
		seen := map[string]int{}
		if err := w.db.Audit().Records(ctx, 1, 0, func(r audit.Record) error { seen[r.Actor+"/"+r.Target]++; return nil }); err != nil {
			t.Fatal(err)
		}
		for g := range writers {
			for i := range each {
				if n, want := seen[fmt.Sprintf("g%d/t%d", g, i)], map[bool]int{true: 0, false: 1}[i%5 == 4]; n != want {
					t.Fatalf("g%d's record %d is in the trail %d times, want %d", g, i, n, want)
				}
			}
		}
		w.checkpoint(t)
		w.exec(t, `UPDATE audit_events SET actor = 'someone-else' WHERE seq = 77`)
		if rep := w.verify(t); rep.OK() || rep.BadSeq != 77 {
			t.Fatalf("a record changed after concurrent appends: %+v", rep)
		}
	})
}

func TestEventsNeedActorActionOutcome(t *testing.T) {
	w := newWorld(t, testenv.Database{Driver: store.SQLite, DSN: t.TempDir() + "/a.db"})
	if err := w.trail.Record(context.Background(), audit.Event{Action: "key.read", Outcome: audit.Success}); err == nil || !strings.Contains(err.Error(), "actor") {
		t.Fatalf("an event without an actor: %v", err)
	}
}

// TestFileSink ships the trail to a JSON-lines file, private to its owner, in batches, once.
func TestFileSink(t *testing.T) {
	w := newWorld(t, testenv.Database{Driver: store.SQLite, DSN: t.TempDir() + "/a.db"})
	w.record(t, 7)
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	sh := &audit.Shipper{Store: w.db.Audit(), Cursors: w.db.Audit(), Sinks: []audit.Sink{audit.FileSink(path, nil)}, Batch: 3}
	for range 2 {
		if err := sh.Ship(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	w.record(t, 2)
	if err := sh.Ship(context.Background()); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var seqs []int64
	for line := range strings.Lines(string(b)) {
		var r audit.Record
		if err := json.Unmarshal([]byte(line), &r); err != nil || r.Hash != r.ComputeHash() {
			t.Fatalf("line %q: %v", line, err)
		}
		seqs = append(seqs, r.Seq)
	}
	if fmt.Sprint(seqs) != "[1 2 3 4 5 6 7 8 9]" {
		t.Fatalf("records in the file: %v", seqs)
	}
	if info, err := os.Stat(path); err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("file mode: %v %v", info.Mode(), err)
	}
}

// TestFindFiltersInTheStore: every combination of filters, paged, on both databases, returns exactly
// what reading the whole trail and filtering it would, in order — actions by name or by a prefix
// ending in '.', which must not match a longer word ("auth." is not "authx.").
func TestFindFiltersInTheStore(t *testing.T) {
	testenv.ForEachDatabase(t, func(t *testing.T, d testenv.Database) {
		ctx := context.Background()
		w := newWorld(t, d)
		actors := []string{"engine:a", "user:alice", "apikey:ci"}
		actions := []string{"key.rotated", "key.read", "auth.login", "auth.logout", "authx.odd", "access.denied"}
		targets := []string{"aws:1:x", "aws:1:y", "team:payments"}
		start := w.clock.Now()
		for i := range 90 {
			w.clock.Add(time.Second)
			if err := w.trail.Record(ctx, audit.Event{Actor: actors[i%3], Action: actions[(i/3)%6], Target: targets[(i/7)%3],
				Outcome: audit.Success}); err != nil {
				t.Fatal(err)
			}
		}
		var all []audit.Record
		if err := w.db.Audit().Records(ctx, 1, 0, func(r audit.Record) error { all = append(all, r); return nil }); err != nil {
			t.Fatal(err)
		}
		match := func(f audit.Filter, r audit.Record) bool {
			switch {
			case !f.Since.IsZero() && r.Time.Before(f.Since), !f.Until.IsZero() && !r.Time.Before(f.Until),
				f.Actor != "" && r.Actor != f.Actor, f.Target != "" && r.Target != f.Target:
				return false
			case strings.HasSuffix(f.Action, "."):
				return strings.HasPrefix(r.Action, f.Action)
			}
			return f.Action == "" || r.Action == f.Action
		}
		n := 0
		for _, actor := range []string{"", "user:alice"} {
			for _, action := range []string{"", "auth.", "key.read", "access."} {
				for _, target := range []string{"", "aws:1:y"} {
					for _, window := range [][2]time.Duration{{}, {20 * time.Second, 70 * time.Second}} {
						for _, newest := range []bool{false, true} {
							f := audit.Filter{Actor: actor, Action: action, Target: target, Limit: 4, Newest: newest}
							if window[1] > 0 {
								f.Since, f.Until = start.Add(window[0]), start.Add(window[1])
							}
							var want, got []int64
							for _, r := range all {
								if match(f, r) {
									want = append(want, r.Seq)
								}
							}
							if newest {
								slices.Reverse(want)
							}
							for page := 0; ; page++ {
								recs, next, err := w.trail.Find(ctx, f)
								if err != nil {
									t.Fatal(err)
								}
								for _, r := range recs {
									got = append(got, r.Seq)
								}
								if next == 0 {
									break
								}
								if page > 100 {
									t.Fatal("paging does not end")
								}
								if newest {
									f.Before = next
								} else {
									f.After = next
								}
							}
							if fmt.Sprint(got) != fmt.Sprint(want) {
								t.Errorf("%+v: got %v, want %v", f, got, want)
							}
							n++
						}
					}
				}
			}
		}
		if n != 64 {
			t.Fatalf("%d combinations", n)
		}
	})
}
