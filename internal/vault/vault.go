// Package vault keeps versions of each cloud identity's credentials, with the secret material under
// envelope encryption: every version has its own random data key (AES-256-GCM), the identity and
// version are bound into the ciphertext as associated data, and data keys are wrapped by a
// key-encryption key (KEK) from a file, an environment variable or AWS KMS.
//
// The vault decides what may happen to a version (its lifecycle); a Store, declared here and
// implemented over SQL in package store, keeps the records.
package vault

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/keyward/keyward/internal/secret"
)

// Errors returned by the vault and its Store.
var (
	ErrNotFound          = errors.New("not found")
	ErrDuplicate         = errors.New("access key already stored")
	ErrConflict          = errors.New("version changed state concurrently")
	ErrInvalidTransition = errors.New("transition not allowed")
	ErrNoSecret          = errors.New("secret not held in the vault")
	ErrKEKMismatch       = errors.New("data keys are wrapped by another key-encryption key")
	ErrAmbiguous         = errors.New("more than one identity matches")
)

// CloudAWS is the only cloud so far.
const CloudAWS = "aws"

// Identity is the cloud principal whose keys the vault keeps: an IAM user in an account.
type Identity struct {
	Cloud     string `json:"cloud"`
	AccountID string `json:"account_id"`
	UserName  string `json:"user_name"`
}

func (id Identity) String() string { return id.Cloud + ":" + id.AccountID + ":" + id.UserName }

var (
	accountRe   = regexp.MustCompile(`^[0-9]{12}$`)
	userNameRe  = regexp.MustCompile(`^[\w+=,.@-]{1,64}$`)
	accessKeyRe = regexp.MustCompile(`^AKIA[A-Z0-9]{16}$`)
)

// Validate checks the identity against AWS's rules for account ids and IAM user names.
func (id Identity) Validate() error {
	if id.Cloud != CloudAWS {
		return fmt.Errorf("cloud %q: only %q is supported", id.Cloud, CloudAWS)
	}
	if err := ValidateAccountID(id.AccountID); err != nil {
		return err
	}
	return ValidateUserName(id.UserName)
}

// ValidateAccountID checks an AWS account id: 12 digits.
func ValidateAccountID(account string) error {
	if !accountRe.MatchString(account) {
		return fmt.Errorf("account id %q: want 12 digits", account)
	}
	return nil
}

// ValidateUserName checks an IAM user name: 1 to 64 of letters, digits and +=,.@_-.
func ValidateUserName(name string) error {
	if !userNameRe.MatchString(name) {
		return fmt.Errorf("user name %q: want 1 to 64 letters, digits or +=,.@_-", name)
	}
	return nil
}

// ValidateAccessKeyID checks the form of a long-lived IAM access key id (AKIA…, 20 characters).
func ValidateAccessKeyID(id string) error {
	if strings.HasPrefix(id, "ASIA") {
		return fmt.Errorf("access key id %q: temporary (STS) credentials cannot be stored or rotated", id)
	}
	if !accessKeyRe.MatchString(id) {
		return fmt.Errorf("access key id %q: want AKIA followed by 16 capital letters or digits", id)
	}
	return nil
}

// ValidateSecret checks the form of a secret access key without ever quoting it.
func ValidateSecret(s secret.Value) error {
	v := s.Reveal()
	switch {
	case v == "":
		return errors.New("secret access key is empty")
	case len(v) < 16 || len(v) > 128:
		return fmt.Errorf("secret access key has %d characters; want 16 to 128 (AWS's are 40)", len(v))
	case strings.ContainsFunc(v, func(r rune) bool { return r <= ' ' || r > '~' }):
		return errors.New("secret access key contains spaces or non-printable characters")
	}
	return nil
}

// State is where a version is in its lifecycle.
type State string

// The lifecycle: pending (created, not yet verified) → current → previous (replaced, still active)
// → inactive (deactivated in the cloud) → destroyed (deleted, secret shredded). A pending version
// whose verification failed goes straight to destroyed.
const (
	StatePending   State = "pending"
	StateCurrent   State = "current"
	StatePrevious  State = "previous"
	StateInactive  State = "inactive"
	StateDestroyed State = "destroyed"
)

// Origin says how a version came to the vault.
type Origin string

// Origins of a version.
const (
	OriginImported Origin = "imported" // an operator gave Keyward a key and its secret
	OriginCreated  Origin = "created"  // Keyward created the key in the cloud
	OriginAdopted  Origin = "adopted"  // the key existed before Keyward; its secret is unknown
)

// Version is one access key of an identity, without its secret.
type Version struct {
	Identity    Identity  `json:"identity"`
	Number      int64     `json:"version"`
	AccessKeyID string    `json:"access_key_id"`
	State       State     `json:"state"`
	Origin      Origin    `json:"origin"`
	HasSecret   bool      `json:"has_secret"`
	CreatedAt   time.Time `json:"created_at"`
	CurrentAt   time.Time `json:"current_at,omitzero"`
	PreviousAt  time.Time `json:"previous_at,omitzero"`
	InactiveAt  time.Time `json:"inactive_at,omitzero"`
	DestroyedAt time.Time `json:"destroyed_at,omitzero"`
}

// Since returns when the version entered its present state.
func (v Version) Since() time.Time {
	switch v.State {
	case StateCurrent:
		return v.CurrentAt
	case StatePrevious:
		return v.PreviousAt
	case StateInactive:
		return v.InactiveAt
	case StateDestroyed:
		return v.DestroyedAt
	}
	return v.CreatedAt
}

// Sealed is a version's secret material as stored: the wrapped data key and the ciphertext.
type Sealed struct {
	KEKID      string
	WrappedKey []byte
	Ciphertext []byte
}

// Record is what a Store keeps for a version.
type Record struct {
	Version
	Sealed Sealed
}

// Credential is a version with its secret, for the few callers allowed to hold one.
type Credential struct {
	Version
	SecretAccessKey secret.Value `json:"-"`
}

// aad is the associated data bound into a version's ciphertext and wrapped data key, so that sealed
// material copied to another identity or version fails to open. IAM user names cannot hold '|'.
func aad(id Identity, number int64, accessKeyID string) []byte {
	return []byte("keyward/v1|" + id.Cloud + "|" + id.AccountID + "|" + id.UserName + "|" +
		strconv.FormatInt(number, 10) + "|" + accessKeyID)
}

// Store keeps version records. Implementations make each method one transaction, or a part of the
// unit of work the context carries (see Atomically).
type Store interface {
	// Atomically runs fn as one transaction: the Store's methods called with the context fn is given
	// are all committed, durably, or none. Inside a unit of work already, fn joins it.
	Atomically(ctx context.Context, fn func(ctx context.Context) error) error
	// NextVersion returns the number the next version of id will get (1 for a new identity). The
	// number is only a reservation hint: CreateVersion fails with ErrConflict if it was taken meanwhile.
	NextVersion(ctx context.Context, id Identity) (int64, error)
	// CreateVersion stores rec. When rec.State is current, the identity's current version (if any)
	// becomes previous at rec.CreatedAt in the same transaction. Errors: ErrDuplicate when the access
	// key id is already stored, ErrConflict when rec.Number is taken.
	CreateVersion(ctx context.Context, rec Record) error
	// CurrentVersion returns the identity's current version. Errors: ErrNotFound.
	CurrentVersion(ctx context.Context, id Identity) (Record, error)
	// Version returns one version. Errors: ErrNotFound.
	Version(ctx context.Context, id Identity, number int64) (Record, error)
	// Identities lists identities matching the filters ("" matches any), ordered.
	Identities(ctx context.Context, userName, accountID string) ([]Identity, error)
	// Versions lists every version's metadata (no sealed material), ordered by identity and number.
	Versions(ctx context.Context) ([]Version, error)
	// VersionsOf lists one identity's versions' metadata, ordered by number (none: empty, no error).
	VersionsOf(ctx context.Context, id Identity) ([]Version, error)
	// CurrentByAge pages the identities that have a current version (of one account, or all with ""),
	// by the current key's age (oldest first, or youngest with asc), and returns how many there are
	// and every current key's creation time.
	CurrentByAge(ctx context.Context, accountID string, asc bool, offset, limit int) (page []Identity, total int, created []time.Time, err error)
	// VersionsOfMany lists the versions of several identities, by identity.
	VersionsOfMany(ctx context.Context, ids []Identity) (map[Identity][]Version, error)
	// Transition moves a version from one state to another at a time. Moving to current demotes the
	// identity's current version to previous in the same transaction. Moving to destroyed erases the
	// sealed material. Errors: ErrConflict when the version is not in state from, ErrNotFound.
	Transition(ctx context.Context, id Identity, number int64, from, to State, at time.Time) error
	// AttachSecret gives an adopted version, which has none, its sealed secret. Errors: ErrNotFound,
	// ErrConflict when the version is not adopted or already has one.
	AttachSecret(ctx context.Context, id Identity, number int64, sealed Sealed) error
	// VersionByKey finds the version holding an access key id. Errors: ErrNotFound.
	VersionByKey(ctx context.Context, accessKeyID string) (Version, error)
	// KEKIDs lists the distinct ids of the KEKs that wrap stored data keys (signing keys' included).
	KEKIDs(ctx context.Context) ([]string, error)
	// Rewrap replaces every stored wrapped data key with what fn (for versions), fnKey (for signing
	// keys) or fnBlob (for sealed blobs) returns: all are rewrapped or none. The functions call the
	// KEK, so they run before the write transaction, never in it. progress, when not nil, is told how
	// many of how many are done; within, when not nil, runs in the write transaction (an audit record).
	Rewrap(ctx context.Context, fn func(Record) (kekID string, wrapped []byte, err error),
		fnKey func(SealedSigningKey) (kekID string, wrapped []byte, err error),
		fnBlob func(name string, s Sealed) (kekID string, wrapped []byte, err error), progress func(done, total int),
		within func(ctx context.Context, n int) error) (int, error)
	// CreateSigningKey stores a signing key.
	CreateSigningKey(ctx context.Context, key SealedSigningKey) error
	// SigningKeys lists the signing keys for a purpose, oldest first.
	SigningKeys(ctx context.Context, purpose string) ([]SealedSigningKey, error)
	// PutBlob stores (or replaces) a sealed blob under its name.
	PutBlob(ctx context.Context, name string, s Sealed, at time.Time) error
	// Blob returns a sealed blob. Errors: ErrNotFound.
	Blob(ctx context.Context, name string) (Sealed, error)
	// DeleteBlob removes a sealed blob (none: no error).
	DeleteBlob(ctx context.Context, name string) error
}
