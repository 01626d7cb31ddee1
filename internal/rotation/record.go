package rotation

import (
	"context"
	"errors"
	"time"

	"github.com/keyward/keyward/internal/vault"
)

// Step is a step of the persisted rotation protocol.
type Step string

// Steps, in order. A rotation is open until its step is finished.
const (
	StepCreate   Step = "create"
	StepVerify   Step = "verify"
	StepDeliver  Step = "deliver" // only for identities with delivery targets
	StepPromote  Step = "promote"
	StepFinished Step = "finished"
)

// Phase says whether a step has started or is done. A step's "done" is written together with the
// next step's "started" (one durable write records both), so an open rotation is always at
// create or verify, started; a finished one is at finished, done. Promotion is written in the same
// transaction as the finish, so StepPromote is only found in records of earlier versions, which
// wrote it on its own.
type Phase string

// Phases.
const (
	PhaseStarted Phase = "started"
	PhaseDone    Phase = "done"
)

// Outcomes of a finished rotation.
const (
	OutcomeRotated = "rotated"
	OutcomeFailed  = "failed"
)

// Record is one rotation of one identity, as persisted.
type Record struct {
	ID         int64
	Identity   vault.Identity
	Step       Step
	Phase      Phase
	OldKeyID   string
	NewKeyID   string
	Version    int64 // the new key's vault version, once stored
	Outcome    string
	Reason     string // why it failed; never secret material
	Attempt    int    // 1 for a first try, n for the n-th consecutive try after failures
	LeaseOwner string // the process working on it
	StartedAt  time.Time
	StepAt     time.Time
	FinishedAt time.Time
}

// Errors of a Store.
var (
	// ErrBusy: another process holds the identity's open rotation.
	ErrBusy = errors.New("rotation in progress elsewhere")
	// ErrLeaseLost: the lease ran out and another process took the rotation over.
	ErrLeaseLost = errors.New("rotation lease lost")
	// ErrStale: the key to be replaced is no longer current — another process rotated it meanwhile.
	ErrStale = errors.New("key already replaced")
	// ErrNotFound: no such rotation.
	ErrNotFound = errors.New("not found")
)

// Store persists rotations. Every method is one durable transaction, unless called inside Atomically.
type Store interface {
	// Atomically runs fn as one durable transaction: the writes made with the context fn is given,
	// through this Store and through the vault (which shares its database), commit together or not
	// at all. This is how a rotation needs three transactions, not seven.
	Atomically(ctx context.Context, fn func(ctx context.Context) error) error
	// Begin opens a new rotation holding the lease, provided r.OldKeyID is still the identity's current
	// key. ErrBusy when a rotation is open for the identity, ErrStale when the key was replaced.
	Begin(ctx context.Context, r Record, owner string, leaseUntil time.Time) (Record, error)
	// Open returns the identity's open rotation, if any.
	Open(ctx context.Context, id vault.Identity) (Record, bool, error)
	// Resume takes the lease of an open rotation: ErrBusy while another owner's lease runs, unless
	// that owner is takeFrom (a process known to be gone).
	Resume(ctx context.Context, rotationID int64, owner string, now, leaseUntil time.Time, takeFrom string) error
	// Save writes the rotation's step, phase and outcome, renewing the lease. ErrLeaseLost when the
	// caller no longer holds it. Saving the finish is ordered with Begin for the same identity.
	Save(ctx context.Context, r Record, owner string, leaseUntil time.Time) error
	// Get returns a rotation by id. Errors: ErrNotFound.
	Get(ctx context.Context, id int64) (Record, error)
	// LastFinished returns the identity's most recent finished rotation, if any.
	LastFinished(ctx context.Context, id vault.Identity) (Record, bool, error)
}
