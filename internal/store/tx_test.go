package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/rotation"
	"github.com/keyward/keyward/internal/secret"
	"github.com/keyward/keyward/internal/store/groupcommit"
	"github.com/keyward/keyward/internal/testenv"
	"github.com/keyward/keyward/internal/vault"
)

func addIdentity(ctx context.Context, tx *Tx, user string) error {
	_, err := tx.exec(ctx, `INSERT INTO identities (cloud, account_id, user_name, created_at) VALUES ('aws', '123456789012', $1, 0)`, user)
	return err
}

func identityNames(t *testing.T, db *DB) map[string]bool {
	t.Helper()
	rows, err := db.sql.Query(`SELECT user_name FROM identities`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	names := map[string]bool{}
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		names[n] = true
	}
	return names
}

// queueWhileBusy starts a write (of the row "first") that holds SQLite's write lock until the returned release is
// called, then starts each of writes and waits until all of them are queued behind it: they will be
// written as one group, in no set order.
func queueWhileBusy(t *testing.T, db *DB, writes ...func(tx *Tx) error) (release func(), errs []error) {
	t.Helper()
	ctx := context.Background()
	started, hold := make(chan struct{}), make(chan struct{})
	errs = make([]error, len(writes)+1)
	var wg sync.WaitGroup
	wg.Go(func() {
		errs[0] = db.inTx(ctx, func(tx *Tx) error {
			close(started)
			<-hold
			return addIdentity(ctx, tx, "first")
		})
	})
	<-started
	for i, w := range writes {
		wg.Go(func() { errs[i+1] = db.inTx(ctx, w) })
	}
	waitQueued(t, db, len(writes))
	return func() { close(hold); wg.Wait() }, errs
}

// waitQueued waits until n writes wait in the committer's queue.
func waitQueued(t *testing.T, db *DB, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		queued := db.commits.Queued()
		if queued == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d writes queued", queued, n)
		}
	}
}

// TestGroupCommit: writes that queue while another is written share one transaction, and each
// one's work is still all or nothing: a failed member's rows and commit hooks are dropped, the
// others' kept.
func TestGroupCommit(t *testing.T) {
	db := mustOpen(t, testenv.Database{Driver: SQLite, DSN: filepath.Join(t.TempDir(), "g.db")})
	ctx := context.Background()
	refused := errors.New("refused")
	var txs [3]*Tx
	var hookRan [2]bool
	release, errs := queueWhileBusy(t, db,
		func(tx *Tx) error { // fails after writing and registering a hook: both must vanish
			txs[0] = tx
			db.onCommit(context.WithValue(ctx, txKey{}, tx), func(context.Context) { hookRan[0] = true })
			if err := addIdentity(ctx, tx, "refused"); err != nil {
				return err
			}
			return refused
		},
		func(tx *Tx) error {
			txs[1] = tx
			db.onCommit(context.WithValue(ctx, txKey{}, tx), func(context.Context) { hookRan[1] = true })
			return addIdentity(ctx, tx, "kept")
		},
		func(tx *Tx) error { // a constraint violation fails this member only
			txs[2] = tx
			if err := addIdentity(ctx, tx, "dropped"); err != nil {
				return err
			}
			return addIdentity(ctx, tx, "first")
		},
	)
	release()
	if errs[0] != nil || !errors.Is(errs[1], refused) || errs[2] != nil {
		t.Fatalf("outcomes: %v", errs)
	}
	if kind, _ := constraintViolation(errs[3]); kind != uniqueViolation {
		t.Fatalf("duplicate row: %v, want a unique violation", errs[3])
	}
	if txs[0] != txs[1] || txs[1] != txs[2] {
		t.Fatal("queued writes were not grouped into one transaction")
	}
	if got := identityNames(t, db); len(got) != 2 || !got["first"] || !got["kept"] {
		t.Fatalf("rows after the group: %v, want first and kept", got)
	}
	if hookRan[0] || !hookRan[1] {
		t.Fatalf("commit hooks ran: %v, want only the successful member's", hookRan)
	}
}

// TestGroupCommitLostTransaction: when the group's transaction is rolled back under it (as SQLite
// does when a statement is interrupted), every member is told, none of their work remains, and
// later writes go on.
func TestGroupCommitLostTransaction(t *testing.T) {
	db := mustOpen(t, testenv.Database{Driver: SQLite, DSN: filepath.Join(t.TempDir(), "g.db")})
	ctx := context.Background()
	release, errs := queueWhileBusy(t, db,
		func(tx *Tx) error { return addIdentity(ctx, tx, "before") },
		func(tx *Tx) error {
			_, err := tx.exec(ctx, "ROLLBACK")
			return err
		},
		func(tx *Tx) error { return addIdentity(ctx, tx, "after") },
	)
	release()
	for i, err := range errs[1:] {
		if !errors.Is(err, groupcommit.ErrTxLost) {
			t.Fatalf("member %d: %v, want errTxLost", i, err)
		}
	}
	if got := identityNames(t, db); len(got) != 1 || !got["first"] {
		t.Fatalf("rows: %v, want only the earlier write's", got)
	}
	if err := db.inTx(ctx, func(tx *Tx) error { return addIdentity(ctx, tx, "later") }); err != nil {
		t.Fatal(err)
	}
	if !identityNames(t, db)["later"] {
		t.Fatal("a later write was lost")
	}
}

// TestIdentityRowIDsRememberedOnlyOnceCommitted: an identity row created by a transaction that is
// rolled back must not be remembered — its row id goes to the next identity created.
func TestIdentityRowIDsRememberedOnlyOnceCommitted(t *testing.T) {
	testenv.ForEachDatabase(t, func(t *testing.T, d testenv.Database) {
		db := mustOpen(t, d)
		v := mustVault(t, db, mustKEK(t), nil)
		ctx := context.Background()
		alice, bob, carol := benchIdentity(1), benchIdentity(2), benchIdentity(3)
		k1, s1 := keyPair(1)
		if _, err := v.AddPending(ctx, alice, k1, s1); err != nil {
			t.Fatal(err)
		}
		// bob's row is created, then the duplicate key rolls the transaction back.
		if _, err := v.AddPending(ctx, bob, k1, s1); !errors.Is(err, vault.ErrDuplicate) {
			t.Fatalf("storing alice's key for bob: %v, want ErrDuplicate", err)
		}
		k3, s3 := keyPair(3)
		if _, err := v.AddPending(ctx, carol, k3, s3); err != nil { // may get the row id bob had
			t.Fatal(err)
		}
		k2, s2 := keyPair(2)
		if _, err := v.AddPending(ctx, bob, k2, s2); err != nil {
			t.Fatal(err)
		}
		for id, want := range map[vault.Identity]string{alice: k1, bob: k2, carol: k3} {
			versions, err := v.VersionsOf(ctx, id)
			if err != nil || len(versions) != 1 || versions[0].AccessKeyID != want {
				t.Fatalf("%s holds %+v (%v), want only %s", id, versions, err, want)
			}
		}
	})
}

// TestGroupCommitSurvivesAPanic: a member whose work panics (an HTTP handler's, say, which net/http
// would recover) takes no one with it: the others are told to try again, and the lock is free.
func TestGroupCommitSurvivesAPanic(t *testing.T) {
	db := mustOpen(t, testenv.Database{Driver: SQLite, DSN: filepath.Join(t.TempDir(), "g.db")})
	ctx := context.Background()
	safely := func(fn func(tx *Tx) error) (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("panicked: %v", r)
			}
		}()
		return db.inTx(ctx, fn)
	}
	started, hold := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		_ = safely(func(tx *Tx) error { close(started); <-hold; return addIdentity(ctx, tx, "first") })
	})
	<-started
	errs := make([]error, 3)
	works := []func(tx *Tx) error{
		func(tx *Tx) error { return addIdentity(ctx, tx, "a") },
		func(tx *Tx) error { _ = addIdentity(ctx, tx, "b"); panic("boom") },
		func(tx *Tx) error { return addIdentity(ctx, tx, "c") },
	}
	for i, w := range works {
		wg.Go(func() { errs[i] = safely(w) })
	}
	waitQueued(t, db, len(works))
	close(hold)
	wg.Wait()
	if errs[1] == nil {
		t.Fatal("the panicking write reported success")
	}
	for _, i := range []int{0, 2} {
		if errs[i] != nil && !errors.Is(errs[i], groupcommit.ErrPanicked) && !strings.Contains(errs[i].Error(), "panicked") {
			t.Fatalf("write %d: %v", i, errs[i])
		}
	}
	if got := identityNames(t, db); got["b"] {
		t.Fatalf("the panicking write's row was committed: %v", got)
	}
	done := make(chan error, 1)
	go func() { done <- db.inTx(ctx, func(tx *Tx) error { return addIdentity(ctx, tx, "later") }) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the write lock was never released after the panic")
	}
}

// TestBeginChecksTheKeyIsCurrent: a rotation begins only for the identity's current key, and only
// one at a time.
func TestBeginChecksTheKeyIsCurrent(t *testing.T) {
	testenv.ForEachDatabase(t, func(t *testing.T, d testenv.Database) {
		db := mustOpen(t, d)
		v := mustVault(t, db, mustKEK(t), nil)
		ctx := context.Background()
		k1, s1 := keyPair(1)
		k2, s2 := keyPair(2)
		for _, k := range []struct {
			id string
			s  secret.Value
		}{{k1, s1}, {k2, s2}} {
			if _, err := v.Import(ctx, alice, k.id, k.s); err != nil { // k2 ends current, k1 previous
				t.Fatal(err)
			}
		}
		now := time.Now()
		rec := rotation.Record{Identity: alice, Step: rotation.StepCreate, Phase: rotation.PhaseStarted, Attempt: 1, StartedAt: now, StepAt: now}
		rec.OldKeyID = k1
		if _, err := db.Rotations().Begin(ctx, rec, "a", now.Add(time.Minute)); !errors.Is(err, rotation.ErrStale) {
			t.Fatalf("begin for a key no longer current: %v, want ErrStale", err)
		}
		rec.OldKeyID = k2
		got, err := db.Rotations().Begin(ctx, rec, "a", now.Add(time.Minute))
		if err != nil || got.ID == 0 {
			t.Fatalf("begin: %+v %v", got, err)
		}
		if _, err := db.Rotations().Begin(ctx, rec, "b", now.Add(time.Minute)); !errors.Is(err, rotation.ErrBusy) {
			t.Fatalf("a second open rotation: %v, want ErrBusy", err)
		}
		if open, ok, err := db.Rotations().Open(ctx, alice); err != nil || !ok || open.ID != got.ID || open.OldKeyID != k2 || open.LeaseOwner != "a" {
			t.Fatalf("open rotation: %+v %v %v", open, ok, err)
		}
	})
}

// TestGroupedAuditAppendsKeepOneChain: members of a group append to the audit trail, one of them then
// fails; the trail stays one unbroken chain without the failed member's record.
func TestGroupedAuditAppendsKeepOneChain(t *testing.T) {
	db := mustOpen(t, testenv.Database{Driver: SQLite, DSN: filepath.Join(t.TempDir(), "g.db")})
	trail := audit.New(db.Audit(), nil, nil)
	refused := errors.New("refused")
	appending := func(actor string, fail bool) func(tx *Tx) error {
		return func(tx *Tx) error {
			ctx := context.WithValue(context.Background(), txKey{}, tx)
			if err := trail.Record(ctx, audit.Event{Actor: actor, Action: "test", Target: "t", Outcome: audit.Success}); err != nil {
				return err
			}
			if fail {
				return refused
			}
			return nil
		}
	}
	release, errs := queueWhileBusy(t, db, appending("a", false), appending("b", true), appending("c", false), appending("d", false))
	release()
	if !errors.Is(errs[2], refused) || errs[1] != nil || errs[3] != nil || errs[4] != nil {
		t.Fatalf("outcomes %v", errs)
	}
	rep, err := trail.Verify(context.Background(), func(string, []byte, []byte) bool { return false }, nil)
	if err != nil || !rep.OK() || rep.Records != 3 {
		t.Fatalf("trail after the group: %+v %v", rep, err)
	}
	var actors []string
	_ = trail.Export(context.Background(), time.Time{}, time.Time{}, func(r audit.Record) error { actors = append(actors, r.Actor); return nil })
	if slices.Contains(actors, "b") {
		t.Fatalf("the failed member's record was kept: %v", actors)
	}
}

// TestCommitAnsweredOnceDurable: SQLite commits without an fsync and the committer fsyncs the log
// after letting the write lock go. A writer is answered only once that fsync is done; meanwhile the
// next writer's work runs, and it commits only after that fsync.
func TestCommitAnsweredOnceDurable(t *testing.T) {
	db := mustOpen(t, testenv.Database{Driver: SQLite, DSN: filepath.Join(t.TempDir(), "d.db")})
	ctx := context.Background()
	syncing, release := make(chan struct{}), make(chan struct{})
	var syncs atomic.Int32
	syncLog := db.syncWAL
	db.syncWAL = func() error {
		if syncs.Add(1) == 1 {
			close(syncing)
			<-release
		}
		return syncLog()
	}
	first := make(chan error, 1)
	go func() { first <- db.inTx(ctx, func(tx *Tx) error { return addIdentity(ctx, tx, "first") }) }()
	<-syncing
	if !identityNames(t, db)["first"] {
		t.Fatal("the first write is not committed while its fsync runs")
	}

	secondRan, second := make(chan struct{}), make(chan error, 1)
	go func() {
		second <- db.inTx(ctx, func(tx *Tx) error {
			close(secondRan)
			return addIdentity(ctx, tx, "second")
		})
	}()
	select {
	case <-secondRan: // the next group's work runs while the fsync goes on
	case <-time.After(10 * time.Second):
		t.Fatal("the second write's work did not run while the first's fsync went on")
	}
	time.Sleep(20 * time.Millisecond)
	select {
	case err := <-first:
		t.Fatalf("the first writer was answered (%v) before its fsync was done", err)
	case err := <-second:
		t.Fatalf("the second writer was answered (%v) before any fsync was done", err)
	default:
	}
	if identityNames(t, db)["second"] {
		t.Fatal("the second write committed while the first's fsync was not done")
	}

	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if err := <-second; err != nil {
		t.Fatal(err)
	}
	if n := syncs.Load(); n != 2 {
		t.Fatalf("%d fsyncs for two commits", n)
	}
}

// TestCommitNotDurable: when the fsync after a commit fails, the writer hears so, and its commit
// hooks do not run.
func TestCommitNotDurable(t *testing.T) {
	db := mustOpen(t, testenv.Database{Driver: SQLite, DSN: filepath.Join(t.TempDir(), "n.db")})
	ctx := context.Background()
	db.syncWAL = func() error { return errors.New("input/output error") }
	hookRan := false
	err := db.Atomically(ctx, func(ctx context.Context) error {
		db.onCommit(ctx, func(context.Context) { hookRan = true })
		return addIdentity(ctx, db.txFrom(ctx), "lost?")
	})
	if err == nil || !strings.Contains(err.Error(), "not known to be durable") || !strings.Contains(err.Error(), "input/output error") {
		t.Fatalf("write with a failed fsync: %v", err)
	}
	if hookRan {
		t.Fatal("a commit hook ran although the commit is not known to be durable")
	}
}

// TestWALSyncsTheLog: the file the committer fsyncs is the database's write-ahead log, opened again
// after a reset (when the committer takes a connection), and a log that is gone needs no fsync.
func TestWALSyncsTheLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "w.db")
	db := mustOpen(t, testenv.Database{Driver: SQLite, DSN: path})
	if err := db.inTx(context.Background(), func(tx *Tx) error { return addIdentity(context.Background(), tx, "x") }); err != nil {
		t.Fatal(err)
	}
	sameFile := func(f *os.File, path string) bool {
		t.Helper()
		held, err := f.Stat()
		if err != nil {
			t.Fatal(err)
		}
		now, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return os.SameFile(held, now)
	}
	if db.wal.f == nil || !sameFile(db.wal.f, path+"-wal") {
		t.Fatalf("the committer synced %v, not %s", db.wal.f, path+"-wal")
	}

	w := &walFile{path: filepath.Join(t.TempDir(), "other.db-wal")}
	if err := w.sync(); err != nil {
		t.Fatalf("sync of a log that is not there: %v", err)
	}
	if err := os.WriteFile(w.path, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := w.sync(); err != nil || !sameFile(w.f, w.path) {
		t.Fatalf("sync of a new log: %v", err)
	}
	old := w.f
	if err := os.Remove(w.path); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(w.path, []byte("two"), 0o600); err != nil {
		t.Fatal(err)
	}
	w.reset() // as the committer does when it takes a connection
	if err := w.sync(); err != nil || w.f == old || !sameFile(w.f, w.path) {
		t.Fatalf("after the log was replaced, sync kept the old file (%v)", err)
	}
	w.close()
}

// TestGroupAnsweredOnceDurable: no member of a group, the writer or the others, is answered before
// the fsync after the group's commit is done.
func TestGroupAnsweredOnceDurable(t *testing.T) {
	db := mustOpen(t, testenv.Database{Driver: SQLite, DSN: filepath.Join(t.TempDir(), "g.db")})
	ctx := context.Background()
	var calls, done atomic.Int32
	syncing, release := make(chan struct{}), make(chan struct{})
	syncLog := db.syncWAL
	db.syncWAL = func() error {
		if calls.Add(1) == 2 { // the group's: the first is the write that held the lock
			close(syncing)
			<-release
		}
		defer done.Add(1)
		return syncLog()
	}
	answered := make(chan int, 2)
	var wg sync.WaitGroup
	hold, held := make(chan struct{}), make(chan struct{})
	wg.Go(func() {
		_ = db.inTx(ctx, func(tx *Tx) error { close(held); <-hold; return addIdentity(ctx, tx, "first") })
	})
	<-held
	for i := range 2 {
		wg.Go(func() {
			if err := db.inTx(ctx, func(tx *Tx) error { return addIdentity(ctx, tx, fmt.Sprint("member-", i)) }); err != nil {
				t.Error(err)
			}
			answered <- int(done.Load())
		})
	}
	waitQueued(t, db, 2)
	close(hold)
	<-syncing
	time.Sleep(20 * time.Millisecond)
	select {
	case n := <-answered:
		t.Fatalf("a member was answered while its group's fsync was not done (%d fsyncs done)", n)
	default:
	}
	close(release)
	wg.Wait()
	for range 2 {
		if n := <-answered; n < 2 {
			t.Fatalf("a member was answered after %d fsyncs, want its group's (the second)", n)
		}
	}
}

// TestGroupCommitUnderContention: many writers, some of whose work fails, with fsyncs slow enough
// that writes queue behind every one of them (and are taken into the group that waits for it):
// exactly the work that succeeded is in the database, and every writer hears its own outcome.
func TestGroupCommitUnderContention(t *testing.T) {
	db := mustOpen(t, testenv.Database{Driver: SQLite, DSN: filepath.Join(t.TempDir(), "c.db")})
	ctx := context.Background()
	var syncs atomic.Int32
	syncLog := db.syncWAL
	db.syncWAL = func() error {
		syncs.Add(1)
		time.Sleep(2 * time.Millisecond)
		return syncLog()
	}
	refused := errors.New("refused")
	const writers, each = 8, 40
	var wg sync.WaitGroup
	var kept sync.Map
	for g := range writers {
		wg.Go(func() {
			for i := range each {
				name := fmt.Sprintf("w%d-%d", g, i)
				fail := (g+i)%7 == 0
				err := db.inTx(ctx, func(tx *Tx) error {
					if err := addIdentity(ctx, tx, name); err != nil {
						return err
					}
					if fail {
						return refused
					}
					return nil
				})
				switch {
				case fail && !errors.Is(err, refused):
					t.Errorf("%s: %v, want its own refusal", name, err)
				case !fail && err != nil:
					t.Errorf("%s: %v", name, err)
				case !fail:
					kept.Store(name, true)
				}
			}
		})
	}
	wg.Wait()
	got := identityNames(t, db)
	want := 0
	kept.Range(func(k, _ any) bool {
		want++
		if !got[k.(string)] {
			t.Errorf("%s was answered as written but is not in the database", k)
		}
		return true
	})
	if len(got) != want {
		t.Fatalf("%d rows, want the %d writes that succeeded", len(got), want)
	}
	if n := syncs.Load(); n >= writers*each/2 {
		t.Errorf("%d fsyncs for %d writes: writers did not share them", n, writers*each)
	}
}

// A write whose context ends fails at its next statement, and none of its work is kept.
func TestWriteCancelledBetweenStatements(t *testing.T) {
	db := mustOpen(t, testenv.Database{Driver: SQLite, DSN: filepath.Join(t.TempDir(), "k.db")})
	ctx, cancel := context.WithCancel(context.Background())
	err := db.inTx(ctx, func(tx *Tx) error {
		if err := addIdentity(ctx, tx, "before"); err != nil {
			return err
		}
		cancel()
		return addIdentity(ctx, tx, "after")
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("write: %v; want context.Canceled", err)
	}
	if names := identityNames(t, db); len(names) != 0 {
		t.Errorf("identities %v kept from a cancelled write", names)
	}
	if err := db.inTx(context.Background(), func(tx *Tx) error { return addIdentity(ctx, tx, "next") }); !errors.Is(err, context.Canceled) {
		t.Errorf("a statement under an ended context: %v; want context.Canceled", err)
	}
}
