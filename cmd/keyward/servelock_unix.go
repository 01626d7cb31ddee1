//go:build unix

package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// lockSQLiteServe makes sure one serve at a time runs on a SQLite database: it holds an exclusive
// lock on a file beside it (never on the database file itself, whose POSIX locks SQLite owns) for as
// long as serve runs, and names the holder when it is taken. Several replicas need PostgreSQL.
func lockSQLiteServe(dbPath string) (release func(), err error) {
	path := dbPath + ".serve-lock"
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock the SQLite database for serve: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder, _ := os.ReadFile(path)
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			who := "another keyward serve"
			if pid, perr := strconv.Atoi(strings.TrimSpace(string(holder))); perr == nil {
				who = fmt.Sprintf("another keyward serve (pid %d)", pid)
			}
			return nil, fmt.Errorf("%s already runs on the SQLite database %s: SQLite serves one process; "+
				"to run several replicas, move to PostgreSQL (vault.driver: postgres; docs/DEPLOY.md)", who, dbPath)
		}
		return nil, fmt.Errorf("lock the SQLite database for serve (%s): %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return func() { _ = f.Close() }, nil // closing the file releases the lock
}
