package rotation

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/cloud"
	"github.com/keyward/keyward/internal/vault"
)

// A reported leak is the explicit rule of safety rule 3 for the exposed key: the engine replaces it
// at once if it is current (an emergency rotation: create, store, verify, deliver, promote as usual),
// then deactivates it at once — without waiting for DeactivateAfter or for the key to go quiet — and
// deletes it LeakDeleteAfter later (kept that long for forensics). The leak is recorded durably
// before anything is done, so a crash at any point is finished by the next visit: a visit reads the
// open leaks and treats a leaked current key as due, a leaked previous key as due for deactivation.

// Leak is a key reported as exposed.
type Leak struct {
	AccessKeyID string
	Identity    vault.Identity // zero when the key's owner is unknown
	Managed     bool           // the vault holds (or held) the key
	ReportedBy  string         // the actor: user:NAME, apikey:NAME, cli:…
	Via         string         // cli, api, aws-health
	Reason      string
	ReportedAt  time.Time
	ResolvedAt  time.Time // when the key was found gone; zero while it exists
}

// LeakStore keeps the record of leaks. RecordLeak and ResolveLeak join the unit of work ctx carries.
type LeakStore interface {
	// RecordLeak stores a leak; a key reported before keeps its first record (first is false).
	RecordLeak(ctx context.Context, l Leak) (first bool, err error)
	// OpenLeaks returns the leaks not yet resolved, by key id.
	OpenLeaks(ctx context.Context) (map[string]Leak, error)
	// ResolveLeak records that the key is gone.
	ResolveLeak(ctx context.Context, keyID string, at time.Time) error
}

// ActionLeaked is the audit action of a leak reported; its notice is key.leaked.
const ActionLeaked = "key.leaked"

// ErrBadKeyID: not an AWS access key id.
var ErrBadKeyID = errors.New("not an AWS access key id")

// keyIDPattern is an AWS access key id: a four-character prefix and 16 characters of base 32.
var keyIDPattern = regexp.MustCompile(`^(AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z2-7]{16}$`)

// ValidKeyID reports whether s has the form of an AWS access key id.
func ValidKeyID(s string) bool { return keyIDPattern.MatchString(s) }

// LeakReport is a report of an exposed key.
type LeakReport struct {
	KeyID      string
	ReportedBy string
	Via        string
	Reason     string
	// DeactivateUnmanaged allows deactivating a key Keyward does not manage (found in IAM).
	DeactivateUnmanaged bool
}

// LeakResponse is what was done about a leak.
type LeakResponse struct {
	KeyID    string          `json:"access_key_id"`
	Identity *vault.Identity `json:"identity,omitempty"` // nil when the owner is unknown
	Managed  bool            `json:"managed"`
	// Was is the key's state when it was reported: current, previous, inactive, deleted (managed);
	// active, inactive (unmanaged, found in IAM); unknown.
	Was         string  `json:"was"`
	FirstReport bool    `json:"first_report"`
	Inactive    bool    `json:"inactive"` // the key no longer signs requests
	Result      *Result `json:"result,omitempty"`
	Next        string  `json:"next"` // what happens now, in a sentence
}

// leaksFor returns the open leaks a visit acts on: the pass's, or read now.
func (e *Engine) leaksFor(ctx context.Context, opts VisitOptions) (map[string]Leak, error) {
	if e.Leaks == nil {
		return nil, nil
	}
	if opts.leaks != nil {
		return opts.leaks, nil
	}
	return e.Leaks.OpenLeaks(ctx)
}

func (e *Engine) leakDeleteAfter() time.Duration { return e.Policy.leakDeleteAfter() }

// RespondToLeak answers a report of an exposed key. A key the vault holds is replaced now if it is
// current, and deactivated at once (the visit of its user does both); a key Keyward does not manage
// is looked for in IAM (whose user it is) and deactivated only with DeactivateUnmanaged. Either way
// the leak is recorded and audited first, and the key's owners and the security channel are told.
func (e *Engine) RespondToLeak(ctx context.Context, r LeakReport) (LeakResponse, error) {
	if !ValidKeyID(r.KeyID) {
		return LeakResponse{}, fmt.Errorf("%q: %w (AKIA… or ASIA…, 20 characters)", r.KeyID, ErrBadKeyID)
	}
	resp := LeakResponse{KeyID: r.KeyID, Was: "unknown"}
	ver, err := e.Vault.VersionByKey(ctx, r.KeyID)
	switch {
	case err == nil:
		return e.respondManaged(ctx, r, ver)
	case !errors.Is(err, vault.ErrNotFound):
		return resp, err
	}
	return e.respondUnmanaged(ctx, r, resp)
}

// respondManaged records the leak of a key the vault holds, and visits its user.
func (e *Engine) respondManaged(ctx context.Context, r LeakReport, ver vault.Version) (LeakResponse, error) {
	id := ver.Identity
	resp := LeakResponse{KeyID: r.KeyID, Identity: &id, Managed: true, Was: string(ver.State)}
	u, userErr := e.Cloud.GetUser(ctx, id.AccountID, id.UserName)
	if userErr != nil {
		u = cloud.User{AccountID: id.AccountID, Name: id.UserName} // its owners (tags) unknown: the leak is recorded all the same
	}
	ue := e.forUser(u)
	leak := Leak{AccessKeyID: r.KeyID, Identity: id, Managed: true, ReportedBy: r.ReportedBy, Via: r.Via, Reason: r.Reason, ReportedAt: e.now()}
	if ver.State == vault.StateDestroyed {
		leak.ResolvedAt = leak.ReportedAt
	}
	var err error
	if resp.FirstReport, err = ue.recordLeak(ctx, leak, string(ver.State)); err != nil {
		return resp, err
	}
	switch {
	case ver.State == vault.StateDestroyed:
		resp.Inactive, resp.Next = true, "the key was deleted already: nothing to do"
		return resp, nil
	case errors.Is(userErr, cloud.ErrNoSuchEntity):
		resp.Next = "its IAM user is gone; the next pass settles the vault"
		return resp, nil
	case userErr != nil:
		return resp, fmt.Errorf("the leak is recorded; the visit of %s could not start: %w", id, userErr)
	case ver.State == vault.StateInactive:
		resp.Inactive, resp.Next = true, fmt.Sprintf("already inactive; deleted %s after it was deactivated", e.leakDeleteAfter())
		return resp, nil
	}
	res, err := e.Visit(ctx, u, VisitOptions{})
	if err != nil {
		return resp, err
	}
	resp.Result = &res
	resp.Inactive = res.done(KindDeactivated, r.KeyID)
	switch {
	case resp.Inactive:
		resp.Next = fmt.Sprintf("deactivated; deleted in %s (kept for forensics)", e.leakDeleteAfter())
	case res.Outcome == Failed:
		resp.Next = "the emergency rotation failed (" + res.Reason + "): the exposed key stays active until a rotation succeeds; every pass tries again"
	default:
		resp.Next = "the next pass deactivates it (" + orReason(res) + ")"
	}
	return resp, nil
}

func orReason(res Result) string {
	if res.Reason != "" {
		return res.Reason
	}
	return string(res.Outcome)
}

// KeyOwner is whose a key is, as Keyward and IAM know it.
type KeyOwner struct {
	Identity *vault.Identity // nil when no configured account knows the key
	Managed  bool            // the vault holds (or held) it
	// State: the vault's state of a managed key (current, previous, inactive, destroyed); IAM's of
	// another (active, inactive); unknown.
	State string
	user  *cloud.User
}

// Whose finds a key's owner: the vault first (a key Keyward manages or managed), then IAM in every
// configured account (GetAccessKeyLastUsed names the user of any key of the account).
func (e *Engine) Whose(ctx context.Context, keyID string) (KeyOwner, error) {
	if ver, err := e.Vault.VersionByKey(ctx, keyID); err == nil {
		id := ver.Identity
		return KeyOwner{Identity: &id, Managed: true, State: string(ver.State)}, nil
	} else if !errors.Is(err, vault.ErrNotFound) {
		return KeyOwner{}, err
	}
	accounts, err := e.Cloud.Accounts(ctx)
	if err != nil {
		return KeyOwner{}, fmt.Errorf("list accounts: %w", err)
	}
	for _, a := range accounts {
		lu, err := e.Cloud.AccessKeyLastUsed(ctx, a.ID, keyID)
		if err != nil || lu.UserName == "" {
			continue
		}
		u := cloud.User{AccountID: a.ID, Name: lu.UserName}
		if got, err := e.Cloud.GetUser(ctx, a.ID, lu.UserName); err == nil {
			u = got
		}
		id := vault.Identity{Cloud: vault.CloudAWS, AccountID: a.ID, UserName: u.Name}
		o := KeyOwner{Identity: &id, State: "unknown", user: &u}
		keys, err := e.Cloud.ListAccessKeys(ctx, a.ID, u.Name)
		if err != nil {
			return o, err
		}
		for _, k := range keys {
			if k.ID == keyID {
				o.State = map[cloud.KeyStatus]string{cloud.KeyActive: "active", cloud.KeyInactive: "inactive"}[k.Status]
			}
		}
		return o, nil
	}
	return KeyOwner{State: "unknown"}, nil
}

// respondUnmanaged records the leak of a key Keyward does not manage, names its owner if IAM knows
// it, and deactivates it only when the report allows it.
func (e *Engine) respondUnmanaged(ctx context.Context, r LeakReport, resp LeakResponse) (LeakResponse, error) {
	leak := Leak{AccessKeyID: r.KeyID, ReportedBy: r.ReportedBy, Via: r.Via, Reason: r.Reason, ReportedAt: e.now()}
	o, err := e.Whose(ctx, r.KeyID)
	if err != nil {
		return resp, err
	}
	ue := e
	if o.user != nil {
		resp.Identity, leak.Identity, resp.Was = o.Identity, *o.Identity, o.State
		ue = e.forUser(*o.user)
	}
	if resp.FirstReport, err = ue.recordLeak(ctx, leak, resp.Was); err != nil {
		return resp, err
	}
	switch {
	case o.user == nil:
		resp.Next = "no configured account knows this key: the report is recorded and told"
	case resp.Was == "inactive":
		resp.Inactive, resp.Next = true, "inactive already; Keyward does not manage it, so it is not deleted"
	case !r.DeactivateUnmanaged:
		resp.Next = "Keyward does not manage this key: deactivate it (keyward leak --deactivate-unmanaged), then replace it where it is used"
	default:
		if err := e.Cloud.SetAccessKeyStatus(ctx, o.user.AccountID, o.user.Name, r.KeyID, cloud.KeyInactive); err != nil {
			return resp, fmt.Errorf("deactivate %s: %w", r.KeyID, err)
		}
		if err := ue.record(ctx, ue.event(ActionDeactivated, *resp.Identity, audit.Success, "access_key_id", r.KeyID,
			"reason", "reported exposed; deactivated on request (--deactivate-unmanaged)")); err != nil {
			return resp, err
		}
		resp.Inactive, resp.Next = true, "deactivated; Keyward does not manage it, so it is not deleted"
	}
	return resp, nil
}

// recordLeak writes the leak, its audit record and its notice in one transaction.
func (e *Engine) recordLeak(ctx context.Context, l Leak, was string) (first bool, err error) {
	if e.Leaks == nil {
		return false, errors.New("leaks are not recorded by this engine")
	}
	ev := e.event(ActionLeaked, l.Identity, audit.Success, "access_key_id", l.AccessKeyID, "reported_by", l.ReportedBy,
		"via", l.Via, "reason", l.Reason, "was", was, "managed", fmt.Sprint(l.Managed))
	ev.Actor = l.ReportedBy // the report is the reporter's act; what the engine does next is the engine's
	if l.Identity == (vault.Identity{}) {
		ev.Target = "access_key:" + l.AccessKeyID
	}
	err = e.Store.Atomically(ctx, func(ctx context.Context) error {
		if first, err = e.Leaks.RecordLeak(ctx, l); err != nil {
			return err
		}
		return e.record(ctx, ev)
	})
	return first, err
}
