package rotation

import (
	"context"
	"fmt"
	"time"

	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/cloud"
	"github.com/keyward/keyward/internal/vault"
)

// Remedy is one key that remediation deactivated, would deactivate (a dry run), or leaves.
type Remedy struct {
	Identity    vault.Identity `json:"identity"`
	AccessKeyID string         `json:"access_key_id"`
	Managed     bool           `json:"managed"`
	UnusedDays  int            `json:"unused_days"`
	// Action: deactivated, would_deactivate, or left (Reason says why).
	Action string `json:"action"`
	Reason string `json:"reason,omitempty"`
}

// Remediation asks for the unused keys to be deactivated.
type Remediation struct {
	OlderThan        time.Duration // unused (or, never used, made) at least this long ago
	IncludeUnmanaged bool          // also keys Keyward does not manage
	DryRun           bool          // say what would be done, change nothing
	Actor            string        // who asks, for the audit trail
	Pass             PassOptions   // which users, and progress
}

// RemediateUnused deactivates the active keys that have not signed a request for r.OlderThan (or,
// never used, were made that long ago) and that Keyward may touch: never an exempt user's (safety
// rule 3), never the current key of an identity Keyward manages (it rotates that one; a key unused
// that long is listed with that reason), and a key Keyward does not manage only with
// IncludeUnmanaged. Each deactivation is audited and told; with DryRun nothing is changed.
func (e *Engine) RemediateUnused(ctx context.Context, r Remediation) ([]Remedy, []string) {
	var out []Remedy
	var errs []string
	now, opts := e.now(), r.Pass
	listErrs := e.eachUser(ctx, opts, func(u cloud.User) {
		got, err := e.remediateUser(ctx, u, now, r)
		out = append(out, got...)
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s/%s: %v", u.AccountID, u.Name, err))
		}
		if opts.Progress != nil {
			opts.Progress(len(out), len(out))
		}
	})
	return out, append(errs, listErrs...)
}

func (e *Engine) remediateUser(ctx context.Context, u cloud.User, now time.Time, req Remediation) ([]Remedy, error) {
	id := vault.Identity{Cloud: vault.CloudAWS, AccountID: u.AccountID, UserName: u.Name}
	_, exempt, err := e.policyFor(ctx, u)
	if err != nil {
		return nil, err
	}
	keys, err := e.Cloud.ListAccessKeys(ctx, u.AccountID, u.Name)
	if err != nil {
		return nil, err
	}
	versions, err := e.Vault.VersionsOf(ctx, id)
	if err != nil {
		return nil, err
	}
	states := map[string]vault.Version{}
	for _, v := range versions {
		if v.State != vault.StateDestroyed {
			states[v.AccessKeyID] = v
		}
	}
	ue := e.forUser(u)
	var out []Remedy
	for _, k := range keys {
		if k.Status != cloud.KeyActive {
			continue
		}
		lu, err := e.Cloud.AccessKeyLastUsed(ctx, u.AccountID, k.ID)
		if err != nil {
			return out, err
		}
		since := lu.At
		if since.IsZero() {
			since = k.CreatedAt
		}
		if now.Sub(since) < req.OlderThan {
			continue
		}
		ver, managed := states[k.ID]
		r := Remedy{Identity: id, AccessKeyID: k.ID, Managed: managed, UnusedDays: int(now.Sub(since) / (24 * time.Hour)), Action: "left"}
		switch {
		case exempt:
			r.Reason = "the user is exempt from rotation: Keyward never touches its keys"
		case managed && ver.State == vault.StateCurrent:
			r.Reason = "the current key of an identity Keyward manages: it is rotated by policy; exempt or delete the user if nothing needs it"
		case !managed && !req.IncludeUnmanaged:
			r.Reason = "not managed by Keyward: give --include-unmanaged to deactivate it"
		case req.DryRun:
			r.Action = "would_deactivate"
		default:
			if err := ue.deactivateUnused(ctx, id, k.ID, ver, managed, r.UnusedDays, req.Actor); err != nil {
				return out, err
			}
			r.Action = "deactivated"
		}
		out = append(out, r)
	}
	return out, nil
}

// deactivateUnused deactivates one key, records it (the vault's state too, for a key it holds) and
// tells its owners.
func (e *Engine) deactivateUnused(ctx context.Context, id vault.Identity, keyID string, ver vault.Version, managed bool, days int, actor string) error {
	if err := e.Cloud.SetAccessKeyStatus(ctx, id.AccountID, id.UserName, keyID, cloud.KeyInactive); err != nil {
		return fmt.Errorf("deactivate %s: %w", keyID, err)
	}
	ev := e.event(ActionDeactivated, id, audit.Success, "access_key_id", keyID,
		"reason", fmt.Sprintf("unused for %d days: keyward remediate unused", days), "requested_by", actor)
	return e.recorded(ctx, func(ctx context.Context) error {
		if managed && ver.State == vault.StatePrevious {
			return e.Vault.Deactivate(ctx, id, ver.Number)
		}
		return nil
	}, ev)
}
