package store

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/keyward/keyward/internal/testenv"
)

// SQLite's lock bytes in the database file (see sqlite3.c: PENDING_BYTE and the SHARED range).
const (
	sqliteSharedFirst = 0x40000002
	sqliteSharedSize  = 510
)

// Opening a database that this process has open already must leave SQLite's locks on the file in
// place. POSIX drops all of a process's locks on a file when any of its descriptors for that file is
// closed, so Open must not open and close an existing database file itself (it creates a missing one,
// to make it private). Without the shared lock, another process could take the database for its
// own, and the last one to close it would delete the log while this one still writes to it.
func TestOpenAgainKeepsLocks(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "k.db")
	first := mustOpen(t, testenv.Database{Driver: SQLite, DSN: path})
	if _, err := first.Vault().Identities(ctx, "", ""); err != nil { // a read: the shared lock is taken
		t.Fatal(err)
	}
	if free := lockProbe(t, path); free {
		t.Fatal("the probe took the shared range with the database open: the probe is broken")
	}
	second, err := Open(ctx, SQLite, path)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	if free := lockProbe(t, path); free {
		t.Error("another process could lock the database exclusively after it was opened a second time")
	}
}

// lockProbe reports whether another process can write-lock SQLite's shared range of path, as a
// process that means to take the database for itself would.
func lockProbe(t *testing.T, path string) (free bool) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run", "^$")
	cmd.Env = append(os.Environ(), lockProbeEnv+"="+path)
	out, err := cmd.CombinedOutput()
	switch {
	case err == nil:
		return true
	case cmd.ProcessState != nil && cmd.ProcessState.ExitCode() == 3:
		return false
	default:
		t.Fatalf("lock probe: %v\n%s", err, out)
		return false
	}
}

const lockProbeEnv = "KEYWARD_TEST_LOCK_PROBE"

// TestMain runs lockProbe's child when asked: it exits 0 if it could write-lock the shared range
// of the file named, 3 if not.
func TestMain(m *testing.M) {
	if path := os.Getenv(lockProbeEnv); path != "" {
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		lk := syscall.Flock_t{Type: syscall.F_WRLCK, Start: sqliteSharedFirst, Len: sqliteSharedSize}
		if err := syscall.FcntlFlock(f.Fd(), syscall.F_SETLK, &lk); err != nil {
			os.Exit(3)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// Open names the path or driver at fault, without creating anything in its place.
func TestOpenBadPath(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct{ driver, dsn, want string }{
		{SQLite, dir, dir + " is a directory"},
		{SQLite, filepath.Join(dir, "missing", "k.db"), "missing/k.db: no such file or directory"},
		{SQLite, "", "empty database path"},
		{"mysql", "x", `unknown database driver "mysql"`},
	} {
		db, err := Open(context.Background(), c.driver, c.dsn)
		if err == nil {
			db.Close()
			t.Errorf("Open(%s, %q) succeeded", c.driver, c.dsn)
		} else if !strings.Contains(err.Error(), c.want) {
			t.Errorf("Open(%s, %q): %v; want it to say %q", c.driver, c.dsn, err, c.want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "missing")); err == nil {
		t.Error("Open created a directory")
	}
}
