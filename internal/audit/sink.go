package audit

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/keyward/keyward/internal/backoff"
)

// Sink receives the trail's records beside the database: a file, CloudWatch Logs. Delivery is at
// least once: after a crash a batch may be sent again, and receivers can drop a record whose seq they
// have (each carries its seq and hash).
type Sink interface {
	// Name identifies the sink's place in the trail; it must stay the same across restarts.
	Name() string
	// Send delivers records, in order, or fails as a whole.
	Send(ctx context.Context, recs []Record) error
}

// Cursors keep, per sink, the seq of the last record it was sent.
type Cursors interface {
	// Cursor returns the seq of the last record sent to sink (0: none).
	Cursor(ctx context.Context, sink string) (int64, error)
	// AdvanceCursor moves sink's cursor from from to to; false when it was not at from (another
	// process shipped meanwhile).
	AdvanceCursor(ctx context.Context, sink string, from, to int64) (bool, error)
}

// Shipper sends the trail to sinks. Rotations never wait for it: they write to the database, and the
// shipper reads from there, so a sink that is down only grows its backlog, sent when it is back.
type Shipper struct {
	Store   Store
	Cursors Cursors
	Sinks   []Sink
	Log     *slog.Logger
	Batch   int // records per Send (default 500)

	mu     sync.Mutex
	failed map[string]time.Time // sink → when it last failed, for the backoff
	errs   map[string]int       // sink → consecutive failures
}

// Ship sends every sink its backlog, and returns the first error (the other sinks are still served).
func (s *Shipper) Ship(ctx context.Context) error { return s.shipAll(ctx, false) }

// shipAll ships to every sink, or, with onlyDue, to those not backing off after failures.
func (s *Shipper) shipAll(ctx context.Context, onlyDue bool) error {
	var first error
	for _, sink := range s.Sinks {
		if onlyDue && !s.due(sink.Name()) {
			continue
		}
		err := s.ship(ctx, sink)
		s.note(sink.Name(), err)
		if err != nil && first == nil {
			first = err
		}
	}
	return first
}

// note keeps count of a sink's consecutive failures (err != nil) for the backoff, and logs them.
func (s *Shipper) note(name string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.errs == nil {
		s.errs, s.failed = map[string]int{}, map[string]time.Time{}
	}
	if err == nil {
		delete(s.errs, name)
		return
	}
	s.errs[name]++
	s.failed[name] = time.Now()
	if s.Log != nil {
		s.Log.Warn("audit sink down: its backlog waits in the database", "sink", name, "failures", s.errs[name], "error", err.Error())
	}
}

// due says whether a sink that failed n times in a row may be tried again (backoff 2^n s, at most 5 min).
func (s *Shipper) due(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.errs[name]
	if n == 0 {
		return true
	}
	wait := backoff.Exponential(2*time.Second, 5*time.Minute, n)
	return time.Since(s.failed[name]) >= wait
}

func (s *Shipper) ship(ctx context.Context, sink Sink) error {
	batch := s.Batch
	if batch <= 0 {
		batch = 500
	}
	for {
		from, err := s.Cursors.Cursor(ctx, sink.Name())
		if err != nil {
			return err
		}
		recs := make([]Record, 0, batch)
		err = s.Store.Records(ctx, from+1, from+int64(batch), func(r Record) error {
			recs = append(recs, r)
			return nil
		})
		if err != nil || len(recs) == 0 {
			return err
		}
		if err := sink.Send(ctx, recs); err != nil {
			return fmt.Errorf("audit sink %s: %w", sink.Name(), err)
		}
		if _, err := s.Cursors.AdvanceCursor(ctx, sink.Name(), from, recs[len(recs)-1].Seq); err != nil {
			return err
		}
		if len(recs) < batch {
			return nil
		}
	}
}

// Run ships every interval until ctx ends, sinks that failed being retried with backoff, then ships
// once more (bounded by a few seconds) so that a stopping process leaves no backlog it could send.
func (s *Shipper) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			last, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			_ = s.Ship(last)
			cancel()
			return
		case <-t.C:
		}
		_ = s.shipAll(ctx, true)
	}
}

// JSONLines writes records as JSON lines to a file (appended, synced after each batch) or to a
// stream such as standard output.
type JSONLines struct {
	name string
	path string    // "" for w
	w    io.Writer // when path is ""
}

// FileSink returns a sink appending to the file at path ("-" is standard output, w).
func FileSink(path string, stdout io.Writer) *JSONLines {
	if path == "-" {
		return &JSONLines{name: "stdout", w: stdout}
	}
	return &JSONLines{name: "file:" + path, path: path}
}

// Name implements Sink.
func (j *JSONLines) Name() string { return j.name }

// Send implements Sink.
func (j *JSONLines) Send(_ context.Context, recs []Record) error {
	var buf []byte
	for _, r := range recs {
		b, err := json.Marshal(r)
		if err != nil {
			return err
		}
		buf = append(append(buf, b...), '\n')
	}
	if j.path == "" {
		_, err := j.w.Write(buf)
		return err
	}
	f, err := os.OpenFile(j.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(buf); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
