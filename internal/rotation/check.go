package rotation

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/keyward/keyward/internal/cloud"
	"github.com/keyward/keyward/internal/delivery"
	"github.com/keyward/keyward/internal/vault"
)

// TargetCheck is what one delivery target holds, read from the target itself, against the vault.
type TargetCheck struct {
	Identity vault.Identity `json:"identity"`
	Target   string         `json:"target"`
	Want     string         `json:"want_access_key_id"`           // the vault's current key
	Held     string         `json:"held_access_key_id,omitempty"` // "" when the target is missing or holds no key
	Stale    bool           `json:"stale"`                        // it does not hold the current key, secret included
	Repaired bool           `json:"repaired,omitempty"`
	Error    string         `json:"error,omitempty"` // it could not be read (or repaired); never a secret
	// Note says how a target that cannot be read back was judged: from Keyward's own delivery
	// record and the time the target says it was last written.
	Note string `json:"note,omitempty"`
}

// CheckDeliveries reads every target of every user opts selects and compares what it holds with the
// vault's current key, secret included; with repair, a stale target is given the current key (and
// the delivery recorded and audited). Users with a rotation in progress, and users whose current key
// was adopted (its secret is not Keyward's to give), are left to their next rotation.
func (e *Engine) CheckDeliveries(ctx context.Context, opts PassOptions, repair bool) ([]TargetCheck, []string) {
	if e.Delivery == nil {
		return nil, nil
	}
	var checks []TargetCheck
	var errs []string
	listErrs := e.eachUser(ctx, opts, func(u cloud.User) {
		got, err := e.checkUser(ctx, u, repair)
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", vault.Identity{Cloud: vault.CloudAWS, AccountID: u.AccountID, UserName: u.Name}, err))
		}
		checks = append(checks, got...)
		if opts.Progress != nil {
			opts.Progress(len(checks), len(checks))
		}
	})
	return checks, append(errs, listErrs...)
}

func (e *Engine) checkUser(ctx context.Context, u cloud.User, repair bool) ([]TargetCheck, error) {
	v := e.newVisit(u, VisitOptions{})
	targets, err := v.targetsOf(ctx)
	if err != nil || len(targets) == 0 {
		return nil, err
	}
	if _, open, err := e.Store.Open(ctx, v.id); err != nil || open {
		return nil, err
	}
	cur, err := e.Vault.Current(ctx, v.id)
	if errors.Is(err, vault.ErrNotFound) || errors.Is(err, vault.ErrNoSecret) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	records, err := e.Delivery.Records.Deliveries(ctx, v.id)
	if err != nil {
		return nil, err
	}
	recorded := map[string]delivery.Record{}
	for _, r := range records {
		recorded[r.Target] = r
	}
	out := make([]TargetCheck, len(targets))
	var repaired []delivery.Spec
	for i, t := range targets {
		c := TargetCheck{Identity: v.id, Target: t.Key(), Want: cur.AccessKeyID}
		held, err := e.Delivery.To.Current(ctx, t)
		switch {
		case err != nil:
			c.Stale, c.Error = true, err.Error()
		case held.Unreadable != "":
			judgeUnreadable(&c, held, recorded[t.Key()])
		default:
			c.Held = held.KeyID
			c.Stale = !held.Content.Equal(t.Format.Render(cur.AccessKeyID, cur.SecretAccessKey))
		}
		if c.Stale && repair {
			if err := delivery.Put(ctx, e.Delivery.To, t, delivery.NewPayload(t, cur, "repair/"+cur.AccessKeyID)); err != nil {
				c.Error = err.Error()
			} else {
				c.Repaired, c.Error = true, ""
				repaired = append(repaired, t)
			}
		}
		out[i] = c
	}
	if len(repaired) == 0 {
		return out, nil
	}
	return out, e.Store.Atomically(ctx, func(ctx context.Context) error {
		return e.recordDeliveries(ctx, v.id, repaired, cur.AccessKeyID, "reason", "repair")
	})
}

// writtenSince is how much later than Keyward's delivery a target may say it was written (clocks
// differ) before the write is taken for someone else's.
const writtenSince = time.Minute

// judgeUnreadable judges a target that cannot be read back from Keyward's record of what it gave it
// and the time the target says it was last written: stale when the record names another key, or
// none, or when the target is missing or was written after Keyward's delivery.
func judgeUnreadable(c *TargetCheck, held delivery.Held, rec delivery.Record) {
	c.Held = rec.AccessKeyID
	how := held.Unreadable + "; judged from Keyward's delivery record"
	switch {
	case rec.AccessKeyID == "":
		c.Stale, c.Note = true, how+": never delivered"
	case rec.AccessKeyID != c.Want:
		c.Stale, c.Note = true, fmt.Sprintf("%s: last given %s", how, rec.AccessKeyID)
	case held.Missing:
		c.Stale, c.Note = true, how+": the target is missing"
	case !held.UpdatedAt.IsZero() && held.UpdatedAt.After(rec.DeliveredAt.Add(writtenSince)):
		c.Stale, c.Note = true, fmt.Sprintf("%s: written at %s, after Keyward's delivery at %s — by someone else",
			how, held.UpdatedAt.UTC().Format(time.RFC3339), rec.DeliveredAt.UTC().Format(time.RFC3339))
	case !held.UpdatedAt.IsZero():
		c.Note = fmt.Sprintf("%s: given %s at %s, last written at %s", how, rec.AccessKeyID,
			rec.DeliveredAt.UTC().Format(time.RFC3339), held.UpdatedAt.UTC().Format(time.RFC3339))
	default:
		c.Note = fmt.Sprintf("%s: given %s at %s", how, rec.AccessKeyID, rec.DeliveredAt.UTC().Format(time.RFC3339))
	}
}

// TargetsOf is one identity's delivery targets and what each was last given, as recorded (no call
// to a target): for the identity's page.
func (e *Engine) TargetsOf(ctx context.Context, id vault.Identity) ([]delivery.TargetState, error) {
	if e.Delivery == nil {
		return nil, nil
	}
	records, err := e.Delivery.Records.Deliveries(ctx, id)
	if err != nil {
		return nil, err
	}
	versions, err := e.Vault.VersionsOf(ctx, id)
	if err != nil {
		return nil, err
	}
	current := ""
	if cur := currentVersion(versions); cur != nil {
		current = cur.AccessKeyID
	}
	specs, err := e.Delivery.Router.For(ctx, id, nil)
	if err != nil {
		return nil, err
	}
	return delivery.States(specs, records, current), nil
}

// IdentityTargets is one identity's delivery targets and what each holds, as recorded.
type IdentityTargets struct {
	Identity     vault.Identity         `json:"identity"`
	CurrentKeyID string                 `json:"current_key_id,omitempty"`
	Targets      []delivery.TargetState `json:"targets"`
}

// TargetStates lists, from the database alone (no cloud call), every identity the vault holds a
// current key of that has delivery targets — the configured ones it matches, and any target a record
// names — and whether each target was given the current key.
func (e *Engine) TargetStates(ctx context.Context) ([]IdentityTargets, error) {
	if e.Delivery == nil {
		return nil, nil
	}
	versions, err := e.Vault.List(ctx)
	if err != nil {
		return nil, err
	}
	records, err := e.Delivery.Records.All(ctx)
	if err != nil {
		return nil, err
	}
	byID := map[vault.Identity][]delivery.Record{}
	for _, r := range records {
		byID[r.Identity] = append(byID[r.Identity], r)
	}
	var out []IdentityTargets
	for _, v := range versions {
		if v.State != vault.StateCurrent {
			continue
		}
		specs, err := e.Delivery.Router.For(ctx, v.Identity, nil) // a tag's targets show once delivered
		if err != nil {
			return nil, err
		}
		if states := delivery.States(specs, byID[v.Identity], v.AccessKeyID); len(states) > 0 {
			out = append(out, IdentityTargets{Identity: v.Identity, CurrentKeyID: v.AccessKeyID, Targets: states})
		}
	}
	return out, nil
}
