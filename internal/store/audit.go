package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/keyward/keyward/internal/audit"
)

// Audit is the audit trail's Store over SQL.
type Audit struct{ db *DB }

// Audit returns the audit trail's Store on db.
func (db *DB) Audit() *Audit { return &Audit{db: db} }

var _ audit.Store = (*Audit)(nil)

// auditLockKey is the PostgreSQL advisory lock that orders the sealing of the trail ("kwaudit" in
// ASCII): one sealer at a time, on any replica. Appenders do not take it.
const auditLockKey = 0x6b7761756469740

const auditColumns = `seq, time, actor, action, target, outcome, source_ip, request_id, detail, prev_hash, hash`

// auditTail is the audit trail's end once a transaction appended to it: state that follows a
// group's savepoints (see txState).
type auditTail struct{ head *audit.Head }

type auditTailKey struct{}

func (t *auditTail) snapshot() func() {
	head := t.head
	return func() { t.head = head }
}

// Append implements audit.Store. On SQLite the transaction already holds the only write lock, so the
// records are chained at once after the head it reads (or wrote). On PostgreSQL they go to
// audit_pending, with no lock: Seal chains them once committed, so that concurrent transactions do
// not queue behind one another's commit for the trail's order.
func (s *Audit) Append(ctx context.Context, recs []audit.Record) error {
	return s.db.inTx(ctx, func(tx *Tx) error {
		if s.db.driver == Postgres {
			// Sent with the transaction's next statement or its COMMIT: no round trip of its own.
			for _, r := range recs {
				if err := tx.execLater(ctx, `INSERT INTO audit_pending (time, actor, action, target, outcome, source_ip, request_id, detail)
					VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`, micros(r.Time), r.Actor, r.Action, r.Target, r.Outcome,
					r.SourceIP, r.RequestID, audit.MarshalDetail(r.Detail)); err != nil {
					return fmt.Errorf("append audit record: %w", err)
				}
			}
			return nil
		}
		tail := txState(tx, auditTailKey{}, func() *auditTail { return &auditTail{} })
		var head audit.Head
		if tail.head != nil {
			head = *tail.head
		} else {
			var err error
			if head, err = s.head(ctx, tx.queryRow); err != nil {
				return err
			}
		}
		recs = slices.Clone(recs)
		end := audit.Chain(head, recs)
		if err := insertChained(ctx, tx, recs); err != nil {
			return err
		}
		tail.head = &end
		return nil
	})
}

// insertChained writes numbered and chained records into audit_events.
func insertChained(ctx context.Context, tx *Tx, recs []audit.Record) error {
	for _, r := range recs {
		if _, err := tx.exec(ctx, `INSERT INTO audit_events (`+auditColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
			r.Seq, micros(r.Time), r.Actor, r.Action, r.Target, r.Outcome, r.SourceIP, r.RequestID,
			audit.MarshalDetail(r.Detail), r.PrevHash, r.Hash); err != nil {
			return fmt.Errorf("append audit record %d: %w", r.Seq, err)
		}
	}
	return nil
}

// sealBatch is how many pending records one sealing transaction chains.
const sealBatch = 1000

// Seal implements audit.Store. On PostgreSQL: under the sealing lock, in a transaction of its own
// (never the caller's unit of work, whose records are not committed yet), it reads the committed
// pending records in the order they were appended, chains them after the head, writes them into
// audit_events and deletes them from audit_pending, a batch at a time. Its reads and writes all
// come after the lock, so a sealer that waited sees what the one before it sealed.
func (s *Audit) Seal(ctx context.Context) (int, error) {
	if s.db.driver != Postgres {
		return 0, nil
	}
	ctx = context.WithValue(ctx, txKey{}, nil) // its own transaction
	var pending bool
	if err := s.db.queryRow(ctx, `SELECT EXISTS (SELECT 1 FROM audit_pending)`).Scan(&pending); err != nil || !pending {
		return 0, err
	}
	total := 0
	for {
		var n int
		err := s.db.inTx(ctx, func(tx *Tx) (err error) {
			n, err = s.sealOnce(ctx, tx)
			return err
		})
		total += n
		if err != nil || n < sealBatch {
			return total, err
		}
	}
}

// sealOnce seals up to sealBatch pending records in tx, under the sealing lock, and returns how many.
func (s *Audit) sealOnce(ctx context.Context, tx *Tx) (int, error) {
	if _, err := tx.exec(ctx, `SELECT pg_advisory_xact_lock($1)`, auditLockKey); err != nil {
		return 0, fmt.Errorf("lock the audit trail: %w", err)
	}
	rows, err := tx.query(ctx, `SELECT id, time, actor, action, target, outcome, source_ip, request_id, detail
		FROM audit_pending ORDER BY id LIMIT $1`, sealBatch)
	var ids []int64
	recs, err := collect(rows, err, func(rows scanner) (audit.Record, error) {
		var r audit.Record
		var id, at int64
		var detail string
		if err := rows.Scan(&id, &at, &r.Actor, &r.Action, &r.Target, &r.Outcome, &r.SourceIP, &r.RequestID, &detail); err != nil {
			return r, err
		}
		r.Time = time.UnixMicro(at).UTC()
		d, err := audit.UnmarshalDetail(detail)
		if err != nil {
			return r, fmt.Errorf("pending audit record %d: %w", id, err)
		}
		r.Detail = d
		ids = append(ids, id)
		return r, nil
	})
	if err != nil || len(recs) == 0 {
		return 0, err
	}
	head, err := s.head(ctx, tx.queryRow)
	if err != nil {
		return 0, err
	}
	audit.Chain(head, recs)
	var seqs, times []int64
	texts := make([][]string, 9) // actor … hash, in auditColumns' order
	for _, r := range recs {
		seqs, times = append(seqs, r.Seq), append(times, micros(r.Time))
		for i, v := range []string{r.Actor, r.Action, r.Target, r.Outcome, r.SourceIP, r.RequestID,
			audit.MarshalDetail(r.Detail), r.PrevHash, r.Hash} {
			texts[i] = append(texts[i], v)
		}
	}
	if _, err := tx.exec(ctx, `INSERT INTO audit_events (`+auditColumns+`)
		SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[],
			$7::text[], $8::text[], $9::text[], $10::text[], $11::text[])`,
		seqs, times, texts[0], texts[1], texts[2], texts[3], texts[4], texts[5], texts[6], texts[7], texts[8]); err != nil {
		return 0, fmt.Errorf("seal audit records %d to %d: %w", recs[0].Seq, recs[len(recs)-1].Seq, err)
	}
	if _, err := tx.exec(ctx, `DELETE FROM audit_pending WHERE id = ANY($1::bigint[])`, ids); err != nil {
		return 0, fmt.Errorf("seal audit records: %w", err)
	}
	return len(recs), nil
}

func (s *Audit) head(ctx context.Context, queryRow func(context.Context, string, ...any) scanner) (audit.Head, error) {
	h := audit.Head{Hash: audit.Genesis}
	err := queryRow(ctx, `SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1`).Scan(&h.Seq, &h.Hash)
	if errors.Is(err, sql.ErrNoRows) {
		return audit.Head{Hash: audit.Genesis}, nil
	}
	if err != nil {
		return h, fmt.Errorf("read the audit trail's head: %w", err)
	}
	return h, nil
}

// Find implements audit.Store: one query, its conditions only those the filter sets, each served by
// an index in the trail's order (migration 0007), and at most limit+1 rows read. A time window is
// first turned into a range of record numbers — times only grow along the trail — so that every
// query reads the trail in its own order from a known start.
func (s *Audit) Find(ctx context.Context, f audit.Filter) ([]audit.Record, int64, error) {
	if _, err := s.Seal(ctx); err != nil {
		return nil, 0, err
	}
	from, to, err := s.seqWindow(ctx, f)
	if err != nil {
		return nil, 0, err
	}
	if to > 0 && to <= from+1 {
		return nil, 0, nil
	}
	where := []string{"seq > $1"}
	args := []any{from}
	add := func(cond string, vals ...any) { // each '?' of cond becomes the next $n
		for _, v := range vals {
			args = append(args, v)
			cond = strings.Replace(cond, "?", fmt.Sprintf("$%d", len(args)), 1)
		}
		where = append(where, cond)
	}
	if f.Newest && f.Before > 0 && (to == 0 || f.Before < to) {
		to = f.Before
	}
	if to > 0 {
		add("seq < ?", to)
	}
	if f.Actor != "" {
		add("actor = ?", f.Actor)
	}
	if f.Target != "" {
		add("target = ?", f.Target)
	}
	if prefix, ok := strings.CutSuffix(f.Action, "."); ok && f.Action != "" {
		// "auth." is every action from "auth." up to, not including, "auth/" ('/' follows '.').
		add(s.db.dialect("action{{collate_c}} >= ? AND action{{collate_c}} < ?"), prefix+".", prefix+"/")
	} else if f.Action != "" {
		add("action = ?", f.Action)
	}
	limit := f.Limit
	args = append(args, limit+1)
	order := "seq"
	if f.Newest {
		order = "seq DESC"
	}
	query := `SELECT ` + auditColumns + ` FROM audit_events WHERE ` + strings.Join(where, " AND ") +
		fmt.Sprintf(" ORDER BY %s LIMIT $%d", order, len(args))
	rows, err := s.db.query(ctx, query, args...)
	recs, err := collect(rows, err, scanAudit)
	if err != nil {
		return nil, 0, fmt.Errorf("read the audit trail: %w", err)
	}
	var next int64
	if len(recs) > limit {
		recs = recs[:limit]
		next = recs[limit-1].Seq
	}
	return recs, next, nil
}

// seqWindow turns f's After and time window into record numbers: records after from, and before to
// (0: no end).
func (s *Audit) seqWindow(ctx context.Context, f audit.Filter) (from, to int64, err error) {
	first := func(t time.Time) (int64, bool, error) { // the first record at or after t
		var seq int64
		err := s.db.queryRow(ctx, `SELECT seq FROM audit_events WHERE time >= $1 ORDER BY time, seq LIMIT 1`, micros(t)).Scan(&seq)
		if errors.Is(err, sql.ErrNoRows) {
			return 0, false, nil
		}
		return seq, err == nil, err
	}
	from = f.After
	if !f.Since.IsZero() {
		seq, ok, err := first(f.Since)
		if err != nil {
			return 0, 0, fmt.Errorf("read the audit trail: %w", err)
		}
		if !ok {
			return 0, 1, nil // nothing that late: an empty window
		}
		from = max(from, seq-1)
	}
	if !f.Until.IsZero() {
		seq, ok, err := first(f.Until)
		if err != nil {
			return 0, 0, fmt.Errorf("read the audit trail: %w", err)
		}
		if ok {
			to = seq
		}
	}
	return from, to, nil
}

// Head implements audit.Store.
func (s *Audit) Head(ctx context.Context) (audit.Head, error) {
	if _, err := s.Seal(ctx); err != nil {
		return audit.Head{}, err
	}
	return s.head(ctx, s.db.queryRow)
}

// auditPage is how many records Records reads per query, so that no read stays open for long.
const auditPage = 1000

// Records implements audit.Store.
func (s *Audit) Records(ctx context.Context, from, to int64, fn func(audit.Record) error) error {
	if _, err := s.Seal(ctx); err != nil {
		return err
	}
	for {
		rows, err := s.db.query(ctx, `SELECT `+auditColumns+` FROM audit_events
			WHERE seq >= $1 AND ($2 = 0 OR seq <= $2) ORDER BY seq LIMIT $3`, from, to, auditPage)
		page, err := collect(rows, err, scanAudit)
		if err != nil {
			return fmt.Errorf("read the audit trail: %w", err)
		}
		for _, r := range page {
			if err := fn(r); err != nil {
				return err
			}
		}
		if len(page) < auditPage {
			return nil
		}
		from = page[len(page)-1].Seq + 1
	}
}

func scanAudit(rows scanner) (audit.Record, error) {
	var r audit.Record
	var at int64
	var detail string
	if err := rows.Scan(&r.Seq, &at, &r.Actor, &r.Action, &r.Target, &r.Outcome, &r.SourceIP, &r.RequestID,
		&detail, &r.PrevHash, &r.Hash); err != nil {
		return r, err
	}
	r.Time = time.UnixMicro(at).UTC()
	d, err := audit.UnmarshalDetail(detail)
	if err != nil {
		return r, &audit.UnreadableError{Seq: r.Seq, Err: err}
	}
	r.Detail = d
	return r, nil
}

// AddCheckpoint implements audit.Store.
func (s *Audit) AddCheckpoint(ctx context.Context, c audit.Checkpoint) error {
	return s.db.inTx(ctx, func(tx *Tx) error {
		_, err := tx.exec(ctx, `INSERT INTO audit_checkpoints (seq, hash, time, key_id, signature) VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (seq, key_id) DO NOTHING`, c.Seq, c.Hash, micros(c.Time), c.KeyID, c.Signature)
		return err
	})
}

const checkpointColumns = `seq, hash, time, key_id, signature`

func scanCheckpoint(row scanner) (audit.Checkpoint, error) {
	var c audit.Checkpoint
	var at int64
	err := row.Scan(&c.Seq, &c.Hash, &at, &c.KeyID, &c.Signature)
	c.Time = time.UnixMicro(at).UTC()
	return c, err
}

// Checkpoints implements audit.Store.
func (s *Audit) Checkpoints(ctx context.Context) ([]audit.Checkpoint, error) {
	rows, err := s.db.query(ctx, `SELECT `+checkpointColumns+` FROM audit_checkpoints ORDER BY seq, time`)
	return collect(rows, err, func(rows scanner) (audit.Checkpoint, error) { return scanCheckpoint(rows) })
}

// LatestCheckpoint implements audit.Store.
func (s *Audit) LatestCheckpoint(ctx context.Context) (audit.Checkpoint, bool, error) {
	c, err := scanCheckpoint(s.db.queryRow(ctx, `SELECT `+checkpointColumns+` FROM audit_checkpoints ORDER BY seq DESC, time DESC LIMIT 1`))
	if errors.Is(err, sql.ErrNoRows) {
		return c, false, nil
	}
	if err != nil {
		return c, false, fmt.Errorf("read the latest audit checkpoint: %w", err)
	}
	return c, true, nil
}

var _ audit.Cursors = (*Audit)(nil)

// Cursor implements audit.Cursors.
func (s *Audit) Cursor(ctx context.Context, sink string) (int64, error) {
	var seq int64
	err := s.db.queryRow(ctx, `SELECT seq FROM audit_sink_cursors WHERE sink = $1`, sink).Scan(&seq)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("audit sink %s: %w", sink, err)
	}
	return seq, nil
}

// AdvanceCursor implements audit.Cursors.
func (s *Audit) AdvanceCursor(ctx context.Context, sink string, from, to int64) (bool, error) {
	var moved bool
	err := s.db.inTx(ctx, func(tx *Tx) error {
		res, err := tx.exec(ctx, `UPDATE audit_sink_cursors SET seq = $1 WHERE sink = $2 AND seq = $3`, to, sink, from)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		if n == 0 && from == 0 {
			res, err = tx.exec(ctx, `INSERT INTO audit_sink_cursors (sink, seq) VALUES ($1, $2) ON CONFLICT (sink) DO NOTHING`, sink, to)
			if err != nil {
				return err
			}
			n, err = res.RowsAffected()
		}
		moved = n == 1
		return err
	})
	if err != nil {
		return false, fmt.Errorf("audit sink %s: %w", sink, err)
	}
	return moved, nil
}
