// Package cloud declares what the rotation engine needs of a cloud: its accounts, their users, and
// the users' access keys. Implementations: awsiam (AWS SDK v2, IAM and STS) and sim (in memory, for
// the demo and unit tests). The engine talks to clouds only through Provider.
package cloud

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/keyward/keyward/internal/secret"
)

// Errors a Provider returns, wrapped with what was being done. Implementations translate their
// cloud's error codes into these.
var (
	// ErrNoSuchEntity: the user or key does not exist.
	ErrNoSuchEntity = errors.New("no such entity")
	// ErrLimitExceeded: the user already holds as many keys as the cloud allows (two in IAM).
	ErrLimitExceeded = errors.New("access key limit exceeded")
	// ErrThrottled: the cloud asked us to slow down and retries ran out. Never fatal: try later.
	ErrThrottled = errors.New("throttled")
	// ErrKeyRefused: the cloud refused a request signed with the key being verified.
	ErrKeyRefused = errors.New("key refused by the cloud")
	// ErrAccessDenied: Keyward's own credentials may not make the call (a *DeniedError says which
	// action). A user Keyward may not manage is reported, never a failure of the pass.
	ErrAccessDenied = errors.New("access denied")
)

// DeniedError is a call the cloud refused for lack of permission.
type DeniedError struct {
	Action string // the IAM action refused, as a policy names it: "iam:ListUserTags"
	Doing  string // what Keyward was doing
	Err    error
}

func (e *DeniedError) Error() string {
	return fmt.Sprintf("%s: %s refused (%v)", e.Doing, e.Action, e.Err)
}

// Is makes errors.Is(err, ErrAccessDenied) true.
func (e *DeniedError) Is(target error) bool { return target == ErrAccessDenied }

func (e *DeniedError) Unwrap() error { return e.Err }

// DeniedAction returns the action a refused call needed, when err is one.
func DeniedAction(err error) (string, bool) {
	var d *DeniedError
	if errors.As(err, &d) {
		return d.Action, true
	}
	return "", false
}

// Account is one cloud account Keyward manages.
type Account struct {
	ID   string
	Name string
}

// User is an IAM user.
type User struct {
	AccountID string
	Name      string
	Path      string
	ARN       string
	Tags      map[string]string
	// Denied names the action Keyward was refused while listing the user (its tags: a policy
	// scoped to an IAM path the user is outside of); "" when none was. Such a user is reported as
	// outside Keyward's permissions, and the listing goes on.
	Denied string
}

// KeyStatus is an access key's status in the cloud.
type KeyStatus string

// Key statuses, spelt as IAM spells them.
const (
	KeyActive   KeyStatus = "Active"
	KeyInactive KeyStatus = "Inactive"
)

// AccessKey is an access key's metadata.
type AccessKey struct {
	ID        string
	Status    KeyStatus
	CreatedAt time.Time
}

// NewAccessKey is a key just created, with the only copy of its secret the cloud will ever give.
type NewAccessKey struct {
	AccessKey
	Secret secret.Value
}

// LastUsed says when a key last signed a request; At is zero when it never has.
type LastUsed struct {
	At      time.Time
	Service string
	Region  string
	// UserName is the key's user, as the cloud names it (IAM's GetAccessKeyLastUsed does for any key
	// of the account): how the owner of a key Keyward does not know is found.
	UserName string
}

// ErrReportUnavailable: the account's credential report cannot be had (not allowed, or not ready in
// time); per-user calls stand in for it.
var ErrReportUnavailable = errors.New("credential report unavailable")

// ReportRow is one row of IAM's credential report: a user (or the account's root, User
// "<root_account>") and its credentials. Times are zero where the report says N/A, no_information or
// not_supported.
type ReportRow struct {
	User             string
	ARN              string
	UserCreated      time.Time
	PasswordEnabled  bool
	PasswordLastUsed time.Time
	MFAActive        bool
	Keys             [2]ReportKey
}

// ReportKey is one of a report row's two access key slots (its id is not in the report).
type ReportKey struct {
	Active          bool
	LastRotated     time.Time // when the key was made
	LastUsed        time.Time
	LastUsedService string
	LastUsedRegion  string
}

// RootUser is the credential report's name for the account's root user.
const RootUser = "<root_account>"

// Inventory is what the inventory reads besides the Provider: the credential report of an account
// (one call for every user's passwords, MFA and keys' last use), and a user's console access and MFA
// devices where the report is unavailable.
type Inventory interface {
	// CredentialReport generates (AWS makes a new one at most every 4 hours) and reads an account's
	// credential report. ErrReportUnavailable when it cannot be had.
	CredentialReport(ctx context.Context, accountID string) (rows []ReportRow, generated time.Time, err error)
	// LoginProfile says whether a user can sign in to the console, and when its password was last used.
	LoginProfile(ctx context.Context, accountID, userName string) (console bool, err error)
	// MFADevices counts a user's MFA devices.
	MFADevices(ctx context.Context, accountID, userName string) (int, error)
}

// Session is a set of temporary credentials made with a long-lived key (STS GetSessionToken): the
// key itself never leaves Keyward. AccessKeyID starts with ASIA.
type Session struct {
	AccessKeyID     string
	SecretAccessKey secret.Value
	SessionToken    secret.Value
	Expiration      time.Time
}

// Session durations STS allows for an IAM user's GetSessionToken.
const (
	MinSessionDuration = 15 * time.Minute
	MaxSessionDuration = 36 * time.Hour
)

// Provider is the cloud as the rotation engine sees it. Methods return the errors above, wrapped.
type Provider interface {
	// Accounts lists the accounts to manage.
	Accounts(ctx context.Context) ([]Account, error)
	// ListUsers calls fn for every user of an account (under the account's user path, when one is
	// configured), following the cloud's paging; an error from fn stops the listing and is returned.
	// A user whose own details Keyward may not read is passed with Denied set, not an error.
	ListUsers(ctx context.Context, accountID string, fn func(User) error) error
	// GetUser returns one user, with its tags. ErrNoSuchEntity when there is none.
	GetUser(ctx context.Context, accountID, userName string) (User, error)
	// UserGroups lists the names of the groups a user belongs to.
	UserGroups(ctx context.Context, accountID, userName string) ([]string, error)
	// ListAccessKeys lists a user's keys, active and inactive.
	ListAccessKeys(ctx context.Context, accountID, userName string) ([]AccessKey, error)
	// CreateAccessKey creates an active key. ErrLimitExceeded when the user holds two.
	CreateAccessKey(ctx context.Context, accountID, userName string) (NewAccessKey, error)
	// SetAccessKeyStatus activates or deactivates a key.
	SetAccessKeyStatus(ctx context.Context, accountID, userName, keyID string, status KeyStatus) error
	// DeleteAccessKey deletes a key. ErrNoSuchEntity when it is already gone.
	DeleteAccessKey(ctx context.Context, accountID, userName, keyID string) error
	// AccessKeyLastUsed says when a key last signed a request.
	AccessKeyLastUsed(ctx context.Context, accountID, keyID string) (LastUsed, error)
	// Verify signs a request with the key itself and returns the ARN the cloud says it belongs to.
	// ErrKeyRefused when the cloud does not accept the key (yet: new IAM keys take seconds to work).
	Verify(ctx context.Context, accountID, keyID string, s secret.Value) (arn string, err error)
	// SessionToken makes temporary credentials lasting d, signed for with the key itself.
	// ErrKeyRefused when the cloud does not accept the key.
	SessionToken(ctx context.Context, accountID, keyID string, s secret.Value, d time.Duration) (Session, error)
}
