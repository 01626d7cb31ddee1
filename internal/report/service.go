package report

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/inventory"
	"github.com/keyward/keyward/internal/rotation"
	"github.com/keyward/keyward/internal/vault"
)

// Snapshots keeps the daily summaries.
type Snapshots interface {
	SaveSnapshot(ctx context.Context, day string, at time.Time, summary []byte) error
	Snapshots(ctx context.Context, since string) ([][]byte, error)
}

// Service gathers the report's facts: the stored inventory, the engine's latest word on each
// identity (held and blocked from the last day's audit records, a failed last rotation, a rotation
// open now), and the policy.
type Service struct {
	Inventory inventory.Store
	Snapshots Snapshots
	Trail     *audit.Trail
	Rotations rotation.Store
	Vault     *vault.Vault
	Policy    rotation.Policy
	Now       func() time.Time
}

func (s *Service) now() time.Time {
	if s.Now == nil {
		return time.Now().UTC()
	}
	return s.Now().UTC()
}

// Compliance builds the report over the stored inventory (one account, or all with "").
func (s *Service) Compliance(ctx context.Context, accountID string) (Report, error) {
	accounts, err := s.Inventory.Accounts(ctx)
	if err != nil {
		return Report{}, err
	}
	if accountID != "" {
		var only []inventory.Account
		for _, a := range accounts {
			if a.ID == accountID {
				only = append(only, a)
			}
		}
		if len(only) == 0 {
			return Report{}, fmt.Errorf("account %s is not in the inventory: keyward inventory --refresh --account %s", accountID, accountID)
		}
		accounts = only
	}
	f := Facts{Accounts: accounts, Policy: s.Policy, Now: s.now(), Held: map[string]string{}, Blocked: map[string]string{},
		Failing: map[string]string{}, Rotating: map[string]bool{}}
	since := f.Now.Add(-48 * time.Hour)
	if err := s.latest(ctx, rotation.ActionHeld, since, func(r audit.Record) string {
		return fmt.Sprintf("old key %s used at %s, after its replacement", r.Detail["access_key_id"], r.Detail["last_used"])
	}, f.Held); err != nil {
		return Report{}, err
	}
	if err := s.latest(ctx, rotation.ActionBlocked, since, func(r audit.Record) string { return r.Detail["reason"] }, f.Blocked); err != nil {
		return Report{}, err
	}
	versions, err := s.Vault.List(ctx)
	if err != nil {
		return Report{}, err
	}
	for _, v := range versions {
		if v.State != vault.StateCurrent {
			continue
		}
		if _, open, err := s.Rotations.Open(ctx, v.Identity); err != nil {
			return Report{}, err
		} else if open {
			f.Rotating[v.Identity.String()] = true
		}
		last, ok, err := s.Rotations.LastFinished(ctx, v.Identity)
		if err != nil {
			return Report{}, err
		}
		if ok && last.Outcome == rotation.OutcomeFailed {
			f.Failing[v.Identity.String()] = fmt.Sprintf("failed %s (attempt %d): %s", last.FinishedAt.Format(time.RFC3339), last.Attempt, last.Reason)
		}
	}
	r := Build(f)
	return r, nil
}

// latest puts the evidence of each identity's latest record of an action since a time into into.
func (s *Service) latest(ctx context.Context, action string, since time.Time, evidence func(audit.Record) string, into map[string]string) error {
	after := int64(0)
	for {
		recs, next, err := s.Trail.Find(ctx, audit.Filter{Action: action, Since: since, After: after, Limit: 1000})
		if err != nil {
			return err
		}
		for _, r := range recs {
			into[r.Target] = r.Time.Format(time.RFC3339) + ": " + evidence(r)
		}
		if next == 0 {
			return nil
		}
		after = next
	}
}

// Snapshot stores today's summary (the last of a day replaces the earlier ones).
func (s *Service) Snapshot(ctx context.Context) (Summary, error) {
	r, err := s.Compliance(ctx, "")
	if err != nil {
		return Summary{}, err
	}
	doc, err := json.Marshal(r.Summary)
	if err != nil {
		return Summary{}, err
	}
	return r.Summary, s.Snapshots.SaveSnapshot(ctx, r.Summary.Day, s.now(), doc)
}

// History returns the daily summaries of the last days, oldest first.
func (s *Service) History(ctx context.Context, days int) ([]Summary, error) {
	docs, err := s.Snapshots.Snapshots(ctx, s.now().AddDate(0, 0, -days+1).Format(time.DateOnly))
	if err != nil {
		return nil, err
	}
	out := []Summary{}
	for _, d := range docs {
		var sum Summary
		if err := json.Unmarshal(d, &sum); err != nil {
			return nil, err
		}
		out = append(out, sum)
	}
	return out, nil
}
