package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
)

// walFile is the SQLite database's write-ahead log, opened by Keyward only to fsync it after a
// commit (see committer). SQLite itself commits without an fsync (synchronous=NORMAL): in WAL mode
// that keeps the database whole through a power cut but may lose the last commits; an fsync of the
// log after the commit, before anyone is told of it, makes it durable again, and can be made
// without holding SQLite's write lock.
type walFile struct {
	path string // empty: nothing to sync (an in-memory database)

	mu       sync.Mutex
	f        *os.File
	replaced []*os.File // files set aside by reset; closed with the database
}

// openWAL finds the log of the main database db is connected to.
func openWAL(ctx context.Context, db *DB) (*walFile, error) {
	var (
		seq        int
		name, path string
	)
	if err := db.sql.QueryRowContext(ctx, `PRAGMA database_list`).Scan(&seq, &name, &path); err != nil {
		return nil, fmt.Errorf("sqlite: find the database file: %w", err)
	}
	if path == "" {
		return &walFile{}, nil
	}
	return &walFile{path: path + "-wal"}, nil
}

// sync makes everything written to the log so far durable. A log that is gone was emptied into the
// database, and synced there, by the last connection to close.
func (w *walFile) sync() error {
	if w.path == "" {
		return nil
	}
	f, err := w.file()
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	return f.Sync()
}

// file returns the log file, opened on first use after a reset.
func (w *walFile) file() (*os.File, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f != nil {
		return w.f, nil
	}
	f, err := os.Open(w.path)
	if err != nil {
		return nil, err
	}
	w.f = f
	return f, nil
}

// reset forgets the file held, so that the next sync opens the log anew. SQLite deletes the log when
// the last connection to the database closes, and makes a new one after; the committer calls reset
// whenever it takes a connection, and keeps that connection open, so the log it writes to is the one
// opened after it. (The file is closed only with the database: another group's writer may still be
// syncing it.)
func (w *walFile) reset() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f != nil {
		w.replaced = append(w.replaced, w.f)
		w.f = nil
	}
}

// close closes the log files held.
func (w *walFile) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, f := range append(w.replaced, w.f) {
		if f != nil {
			f.Close()
		}
	}
	w.f, w.replaced = nil, nil
}
