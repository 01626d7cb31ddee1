// Package audit is Keyward's tamper-evident trail: every event (a rotation step, a secret read, a
// login, an admin change) becomes an append-only record that carries the SHA-256 of the record
// before it, and signed checkpoints pin the trail's end from time to time. A changed, removed,
// inserted or reordered record breaks the chain; a trail cut short of a checkpoint, or rewritten
// before one, no longer matches it.
//
// Records never hold secret material: an event names keys by their access key id only.
package audit

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"time"
)

// Outcomes of an event.
const (
	Success = "success"
	Failure = "failure"
	Denied  = "denied"
)

// Event is something that happened, as its emitter tells it.
type Event struct {
	Actor     string            `json:"actor"`  // who: "engine:host/pid", "cli:alice", "user:bob", "apikey:ci"
	Action    string            `json:"action"` // what: "rotation.started", "key.read", "auth.login"…
	Target    string            `json:"target"` // on what: an identity, a team, a user
	Outcome   string            `json:"outcome"`
	SourceIP  string            `json:"source_ip,omitempty"`
	RequestID string            `json:"request_id,omitempty"`
	Detail    map[string]string `json:"detail,omitempty"` // never secret material
}

// Record is an event in the trail: numbered, timed and chained.
type Record struct {
	Seq  int64     `json:"seq"`
	Time time.Time `json:"time"`
	Event
	PrevHash string `json:"prev_hash"`
	Hash     string `json:"hash"`
}

// Head is the end of the trail: its last record's number and hash (0 and Genesis when empty).
type Head struct {
	Seq  int64
	Hash string
}

// Genesis is the prev_hash of the first record.
var Genesis = hex.EncodeToString(make([]byte, sha256.Size))

// Checkpoint says, under a signature, that the trail up to Seq ends in Hash.
type Checkpoint struct {
	Seq       int64
	Hash      string
	Time      time.Time
	KeyID     string
	Signature []byte
}

// Store keeps the trail.
type Store interface {
	// Append stores records (their Time and Event set) in the unit of work ctx carries if any: they
	// are durable with it, or not at all. The store numbers and chains them (see Chain) in the
	// order appends commit: at once, under a lock that orders appends, or afterwards, when Seal
	// seals what has committed since.
	Append(ctx context.Context, recs []Record) error
	// Seal numbers and chains the records appended and committed but not yet in the chain, and
	// returns how many. Records, Head and Find seal first, so they see every committed record.
	Seal(ctx context.Context) (int, error)
	// Records calls fn for each record with from <= seq (and seq <= to when to > 0), in order.
	Records(ctx context.Context, from, to int64, fn func(Record) error) error
	// Head returns the trail's last record's number and hash.
	Head(ctx context.Context) (Head, error)
	// AddCheckpoint stores a checkpoint.
	AddCheckpoint(ctx context.Context, c Checkpoint) error
	// Checkpoints lists the checkpoints, by seq.
	Checkpoints(ctx context.Context) ([]Checkpoint, error)
	// LatestCheckpoint returns the checkpoint of the highest seq (the newest of those), if any.
	LatestCheckpoint(ctx context.Context) (Checkpoint, bool, error)
	// Find returns the first f.Limit records after f.After that f selects, in order, and the number
	// to pass as After for the next page (0 when there is none). It reads what it returns, not the
	// whole trail.
	Find(ctx context.Context, f Filter) ([]Record, int64, error)
}

// Signer signs checkpoints; Keyward's is an Ed25519 key kept in its vault.
type Signer interface {
	KeyID() string
	Sign(msg []byte) []byte
}

// Trail appends events to a Store. It is safe for concurrent use.
type Trail struct {
	store Store
	now   func() time.Time
	log   *slog.Logger
}

// New returns a trail over st. now may be nil (time.Now).
func New(st Store, now func() time.Time, log *slog.Logger) *Trail {
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Trail{store: st, now: now, log: log}
}

type originKey struct{}

type origin struct{ ip, requestID string }

// WithOrigin returns a context whose events, when they do not say, came from a request: its source
// address and its id.
func WithOrigin(ctx context.Context, sourceIP, requestID string) context.Context {
	return context.WithValue(ctx, originKey{}, origin{ip: sourceIP, requestID: requestID})
}

// SourceIP returns the source address WithOrigin put in ctx ("" when none).
func SourceIP(ctx context.Context) string {
	o, _ := ctx.Value(originKey{}).(origin)
	return o.ip
}

// Record appends events, in the unit of work ctx carries if any: with it, the events are committed
// with the work they describe, or not at all.
func (t *Trail) Record(ctx context.Context, events ...Event) error {
	if len(events) == 0 {
		return nil
	}
	for _, e := range events {
		if e.Actor == "" || e.Action == "" || e.Outcome == "" {
			return fmt.Errorf("audit event %q by %q: actor, action and outcome are required", e.Action, e.Actor)
		}
	}
	if o, ok := ctx.Value(originKey{}).(origin); ok {
		events = slices.Clone(events)
		for i := range events {
			if events[i].SourceIP == "" {
				events[i].SourceIP = o.ip
			}
			if events[i].RequestID == "" {
				events[i].RequestID = o.requestID
			}
		}
	}
	// Microseconds: what the store keeps, so that the hash is computed over what is read back.
	now := t.now().UTC().Truncate(time.Microsecond)
	recs := make([]Record, len(events))
	for i, e := range events {
		recs[i] = Record{Time: now, Event: e}
	}
	err := t.store.Append(ctx, recs)
	if err != nil {
		return fmt.Errorf("audit %s: %w", events[0].Action, err)
	}
	return nil
}

// Chain numbers recs after head and chains them to it and to each other, in place, and returns the
// new head: what a Store does when it puts appended records into the trail.
func Chain(head Head, recs []Record) Head {
	for i := range recs {
		r := &recs[i]
		r.Seq, r.PrevHash = head.Seq+1, head.Hash
		r.Hash = r.ComputeHash()
		head = Head{Seq: r.Seq, Hash: r.Hash}
	}
	return head
}

// Seal puts the records appended and committed since the last seal into the chain (see
// Store.Seal), and returns how many. Anything that reads the trail seals first; serve also seals
// every second, so that a record spends little time outside the chain.
func (t *Trail) Seal(ctx context.Context) (int, error) {
	n, err := t.store.Seal(ctx)
	if err != nil {
		return n, fmt.Errorf("seal the audit trail: %w", err)
	}
	return n, nil
}

// ComputeHash returns the hex SHA-256 of the record's content and its prev_hash: every field but
// Hash, each length-prefixed so that no two records encode alike.
func (r Record) ComputeHash() string {
	h := sha256.New()
	field := func(s string) {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	field("keyward-audit/v1")
	field(fmt.Sprint(r.Seq))
	field(fmt.Sprint(r.Time.UnixMicro()))
	field(r.Actor)
	field(r.Action)
	field(r.Target)
	field(r.Outcome)
	field(r.SourceIP)
	field(r.RequestID)
	keys := make([]string, 0, len(r.Detail))
	for k := range r.Detail {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	field(fmt.Sprint(len(keys)))
	for _, k := range keys {
		field(k)
		field(r.Detail[k])
	}
	field(r.PrevHash)
	return hex.EncodeToString(h.Sum(nil))
}

// checkpointMessage is what a checkpoint's signature covers.
func checkpointMessage(c Checkpoint) []byte {
	return fmt.Appendf(nil, "keyward-audit-checkpoint/v1|%d|%s|%d|%s", c.Seq, c.Hash, c.Time.UnixMicro(), c.KeyID)
}

// Checkpoint signs the trail's current end, unless the newest checkpoint already covers it. It
// returns the checkpoint that covers the end.
func (t *Trail) Checkpoint(ctx context.Context, signer Signer) (Checkpoint, error) {
	head, err := t.store.Head(ctx)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("audit checkpoint: %w", err)
	}
	last, ok, err := t.store.LatestCheckpoint(ctx)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("audit checkpoint: %w", err)
	}
	if ok && last.Seq == head.Seq && last.KeyID == signer.KeyID() {
		return last, nil
	}
	if head.Seq == 0 {
		return Checkpoint{}, nil
	}
	c := Checkpoint{Seq: head.Seq, Hash: head.Hash, Time: t.now().UTC().Truncate(time.Microsecond), KeyID: signer.KeyID()}
	c.Signature = signer.Sign(checkpointMessage(c))
	if err := t.store.AddCheckpoint(ctx, c); err != nil {
		return Checkpoint{}, fmt.Errorf("audit checkpoint: %w", err)
	}
	return c, nil
}

// Verifier checks a checkpoint's signature with the public key named by keyID; false when the key
// is unknown or the signature wrong.
type Verifier func(keyID string, msg, sig []byte) bool

// Ed25519Verifier verifies with the public keys given by key id.
func Ed25519Verifier(keys map[string]ed25519.PublicKey) Verifier {
	return func(keyID string, msg, sig []byte) bool {
		pub, ok := keys[keyID]
		return ok && ed25519.Verify(pub, msg, sig)
	}
}

// Report is what Verify found.
type Report struct {
	Records     int64      `json:"records"`
	Checkpoints int        `json:"checkpoints"`
	Last        Checkpoint `json:"-"`
	// BadSeq is the first record at fault (0 when the trail is intact); Problem says what is wrong.
	BadSeq  int64  `json:"bad_seq,omitempty"`
	Problem string `json:"problem,omitempty"`
}

// OK says whether the trail is intact.
func (r Report) OK() bool { return r.Problem == "" }

// ErrTampered marks a trail that failed verification.
var ErrTampered = errors.New("audit trail tampered with")

// Verify walks the whole trail: numbers without gaps from 1, each record's hash its content's, each
// prev_hash the hash before it; every checkpoint signed by a known key and matching the record it
// names; the trail reaching the newest checkpoint. progress may be nil.
func (t *Trail) Verify(ctx context.Context, verify Verifier, progress func(seq int64)) (Report, error) {
	var rep Report
	cps, err := t.store.Checkpoints(ctx)
	if err != nil {
		return rep, err
	}
	rep.Checkpoints = len(cps)
	for _, c := range cps {
		if !verify(c.KeyID, checkpointMessage(c), c.Signature) {
			rep.BadSeq, rep.Problem = c.Seq, fmt.Sprintf("the checkpoint at record %d is not signed by a known audit key (%s)", c.Seq, c.KeyID)
			return rep, nil
		}
	}
	bySeq := map[int64][]Checkpoint{}
	for _, c := range cps {
		bySeq[c.Seq] = append(bySeq[c.Seq], c)
	}
	prev := Head{Hash: Genesis}
	bad := func(seq int64, format string, args ...any) error {
		rep.BadSeq, rep.Problem = seq, fmt.Sprintf(format, args...)
		return errStop
	}
	err = t.store.Records(ctx, 1, 0, func(r Record) error {
		switch {
		case r.Seq != prev.Seq+1:
			return bad(prev.Seq+1, "record %d is missing (the next one is %d)", prev.Seq+1, r.Seq)
		case r.PrevHash != prev.Hash:
			return bad(r.Seq, "record %d does not follow record %d: the chain is broken (a record was changed, removed, inserted or moved)", r.Seq, prev.Seq)
		case r.ComputeHash() != r.Hash:
			return bad(r.Seq, "record %d was changed: its content does not match its hash", r.Seq)
		}
		for _, c := range bySeq[r.Seq] {
			if c.Hash != r.Hash {
				return bad(r.Seq, "record %d does not match the signed checkpoint at it: the trail was rewritten", r.Seq)
			}
		}
		prev = Head{Seq: r.Seq, Hash: r.Hash}
		rep.Records = r.Seq
		if progress != nil {
			progress(r.Seq)
		}
		return nil
	})
	var unreadable *UnreadableError
	if errors.As(err, &unreadable) {
		rep.BadSeq, rep.Problem = unreadable.Seq, fmt.Sprintf("record %d was changed: %v", unreadable.Seq, unreadable.Err)
		return rep, nil
	}
	if err != nil && !errors.Is(err, errStop) {
		return rep, err
	}
	if rep.Problem != "" {
		return rep, nil
	}
	if n := len(cps); n > 0 {
		rep.Last = cps[n-1]
		if last := cps[n-1]; last.Seq > prev.Seq {
			rep.BadSeq = prev.Seq + 1
			rep.Problem = fmt.Sprintf("the trail ends at record %d but a signed checkpoint covers records up to %d: its tail was cut off", prev.Seq, last.Seq)
			return rep, nil
		}
	}
	return rep, nil
}

var errStop = errors.New("stop")

// UnreadableError is a stored record that cannot be read back as a record (its detail is not the
// JSON object Keyward wrote): a Store's Records returns it, naming the record.
type UnreadableError struct {
	Seq int64
	Err error
}

func (e *UnreadableError) Error() string {
	return fmt.Sprintf("audit record %d is unreadable: %v", e.Seq, e.Err)
}
func (e *UnreadableError) Unwrap() error { return e.Err }

// Export calls fn for every record whose time is in [since, until) (a zero bound is open), in order.
func (t *Trail) Export(ctx context.Context, since, until time.Time, fn func(Record) error) error {
	return t.store.Records(ctx, 1, 0, func(r Record) error {
		if (!since.IsZero() && r.Time.Before(since)) || (!until.IsZero() && !r.Time.Before(until)) {
			return nil
		}
		return fn(r)
	})
}

// MarshalDetail encodes a record's detail as the store keeps it (a JSON object, "" when empty).
func MarshalDetail(d map[string]string) string {
	if len(d) == 0 {
		return ""
	}
	b, _ := json.Marshal(d) // a map of strings always encodes
	return string(b)
}

// UnmarshalDetail reverses MarshalDetail.
func UnmarshalDetail(s string) (map[string]string, error) {
	if s == "" {
		return nil, nil
	}
	var d map[string]string
	if err := json.Unmarshal([]byte(s), &d); err != nil {
		var syn *json.SyntaxError
		var typ *json.UnmarshalTypeError
		switch {
		case errors.As(err, &syn):
			return nil, fmt.Errorf("its detail is not valid JSON (at byte %d)", syn.Offset)
		case errors.As(err, &typ):
			return nil, fmt.Errorf("its detail is not a JSON object of strings (a %s at %q)", typ.Value, typ.Field)
		}
		return nil, fmt.Errorf("audit detail: %w", err)
	}
	return d, nil
}

// Filter selects records for Find. Empty fields match everything.
type Filter struct {
	After int64 // records after this number (paging: the last number of the previous page)
	// Newest lists the newest records first; Before then pages: records before this number (the
	// last number of the previous page), 0 for the newest.
	Newest       bool
	Before       int64
	Limit        int // at most this many (default 100)
	Since, Until time.Time
	Actor        string
	Action       string // an action, or a prefix ending in '.' ("auth.")
	Target       string
}

// Find returns a page of the records f selects, in order (newest first with f.Newest), and the
// number to pass as After (Before) for the next page (0 when this one is the last). The store filters: a page costs what it returns.
func (t *Trail) Find(ctx context.Context, f Filter) ([]Record, int64, error) {
	if f.Limit <= 0 {
		f.Limit = 100
	}
	if f.After == math.MaxInt64 { // nothing comes after the last possible number
		return nil, 0, nil
	}
	return t.store.Find(ctx, f)
}
