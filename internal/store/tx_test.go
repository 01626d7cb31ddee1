package store

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/rotation"
	"github.com/keyward/keyward/internal/secret"
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
		db.commits.mu.Lock()
		queued := len(db.commits.queue)
		db.commits.mu.Unlock()
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
			_, err := tx.ExecContext(ctx, "ROLLBACK")
			return err
		},
		func(tx *Tx) error { return addIdentity(ctx, tx, "after") },
	)
	release()
	for i, err := range errs[1:] {
		if !errors.Is(err, errTxLost) {
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
		if errs[i] != nil && !errors.Is(errs[i], errPanicked) && !strings.Contains(errs[i].Error(), "panicked") {
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
