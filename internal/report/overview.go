package report

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/rotation"
	"github.com/keyward/keyward/internal/vault"
)

// The overview is the inventory page's read model: every identity Keyward manages (or that the
// inventory lists as exempt), its keys, its state and next step — from the database alone (the
// vault, the rotation records, the last two days' audit records), filtered, sorted and paged, so
// that a page of thousands of identities costs no call to the cloud. `keyward status` asks the cloud
// and is the authority; the overview's next step applies the policy without the users' tags.

// States an identity can be in, on the overview.
const (
	StateOK       = "ok"
	StateRotating = "rotating"
	StateHeld     = "held"
	StateBlocked  = "blocked"
	StateFailing  = "failing"
	StateExempt   = "exempt"
)

// OverviewStates lists them, for filters.
var OverviewStates = []string{StateOK, StateRotating, StateHeld, StateBlocked, StateFailing, StateExempt}

// KeyRow is one key of an identity on the overview.
type KeyRow struct {
	AccessKeyID string
	State       vault.State
	CreatedAt   time.Time
}

// Row is one identity on the overview.
type Row struct {
	Identity   vault.Identity
	Teams      []string
	Keys       []KeyRow
	CurrentAge time.Duration // of the current key (0: none)
	State      string
	Reason     string
	Next       rotation.NextAction
	NextKeyID  string
	Due        time.Time
}

// OverviewQuery selects, orders and pages the overview.
type OverviewQuery struct {
	Account, Team, State string
	Sort                 string // age (default) or name
	Asc                  bool   // age: youngest first; name: a to z (default for name)
	Offset, Limit        int
}

// OverviewPage is one page of the overview, with the total and every current key's age.
type OverviewPage struct {
	Rows  []Row
	Total int
	Ages  []time.Duration // of every current key matching the filters, for the histogram
}

// RotationStates is the store's bulk view of rotations (see store.Rotations.States).
type RotationStates interface {
	States(ctx context.Context) (open map[vault.Identity]bool, failed map[vault.Identity]rotation.Record, err error)
}

// facts are the engine's states an overview reads: open and failed rotations, held and blocked.
type facts struct {
	open          map[vault.Identity]bool
	failed        map[vault.Identity]rotation.Record
	held, blocked map[string]string
}

func (s *Service) facts(ctx context.Context, now time.Time) (facts, error) {
	states, ok := s.Rotations.(RotationStates)
	if !ok {
		return facts{}, fmt.Errorf("the rotation store gives no bulk states")
	}
	var f facts
	var err error
	if f.open, f.failed, err = states.States(ctx); err != nil {
		return f, err
	}
	f.held, f.blocked = map[string]string{}, map[string]string{}
	since := now.Add(-48 * time.Hour)
	if err := s.latest(ctx, rotation.ActionHeld, since, func(r audit.Record) string { return "old key " + r.Detail["access_key_id"] + " still in use" }, f.held); err != nil {
		return f, err
	}
	return f, s.latest(ctx, rotation.ActionBlocked, since, func(r audit.Record) string { return r.Detail["reason"] }, f.blocked)
}

// Overview builds one page of the overview. Sorted by age with no team or state filter — the page
// one opens — it is cut in SQL and only its identities are read; otherwise every identity is read
// and the page cut here.
func (s *Service) Overview(ctx context.Context, q OverviewQuery, teamsOf map[vault.Identity][]string) (OverviewPage, error) {
	now := s.now()
	f, err := s.facts(ctx, now)
	if err != nil {
		return OverviewPage{}, err
	}
	if q.Sort != "name" && q.Team == "" && q.State == "" {
		return s.overviewByAge(ctx, q, teamsOf, f, now)
	}
	versions, err := s.Vault.List(ctx)
	if err != nil {
		return OverviewPage{}, err
	}
	open, failed, held, blocked := f.open, f.failed, f.held, f.blocked
	var rows []Row
	for i := 0; i < len(versions); {
		j := i
		for j < len(versions) && versions[j].Identity == versions[i].Identity {
			j++
		}
		row := s.row(versions[i:j], now, open, failed, held, blocked)
		row.Teams = teamsOf[row.Identity]
		if len(row.Keys) > 0 || row.State != StateOK {
			rows = append(rows, row)
		}
		i = j
	}
	rows = append(rows, s.exemptRows(ctx, rows, teamsOf)...)
	return pageOf(rows, q), nil
}

// overviewByAge is the page by age cut in SQL: the identities with a current key, oldest (or
// youngest) first, then the exempt ones of the inventory.
func (s *Service) overviewByAge(ctx context.Context, q OverviewQuery, teamsOf map[vault.Identity][]string, f facts, now time.Time) (OverviewPage, error) {
	if q.Limit <= 0 {
		q.Limit = 100
	}
	ids, total, created, err := s.Vault.CurrentByAge(ctx, q.Account, q.Asc, q.Offset, q.Limit)
	if err != nil {
		return OverviewPage{}, err
	}
	versions, err := s.Vault.VersionsOfMany(ctx, ids)
	if err != nil {
		return OverviewPage{}, err
	}
	out := OverviewPage{Ages: make([]time.Duration, 0, len(created))}
	for _, c := range created {
		out.Ages = append(out.Ages, now.Sub(c))
	}
	for _, id := range ids {
		row := s.row(versions[id], now, f.open, f.failed, f.held, f.blocked)
		row.Teams = teamsOf[id]
		out.Rows = append(out.Rows, row)
	}
	var exempt []Row
	for _, r := range s.exemptRows(ctx, nil, teamsOf) {
		if q.Account == "" || r.Identity.AccountID == q.Account {
			exempt = append(exempt, r)
		}
	}
	out.Total = total + len(exempt)
	if len(out.Rows) < q.Limit { // the page reaches past the managed identities
		start := max(q.Offset-total, 0)
		for i := start; i < len(exempt) && len(out.Rows) < q.Limit; i++ {
			out.Rows = append(out.Rows, exempt[i])
		}
	}
	return out, nil
}

// exemptRows are the inventory's exempt users that Keyward holds nothing of.
func (s *Service) exemptRows(ctx context.Context, known []Row, teamsOf map[vault.Identity][]string) []Row {
	accounts, err := s.Inventory.Accounts(ctx)
	if err != nil {
		return nil
	}
	seen := map[vault.Identity]bool{}
	for _, r := range known {
		seen[r.Identity] = true
	}
	var out []Row
	for _, a := range accounts {
		for _, u := range a.Users {
			id := vault.Identity{Cloud: vault.CloudAWS, AccountID: a.ID, UserName: u.Name}
			if u.ExemptBy == "" || seen[id] {
				continue
			}
			row := Row{Identity: id, State: StateExempt, Reason: "exempted by " + u.ExemptBy, Teams: teamsOf[id], Next: rotation.NextNone}
			for _, k := range u.Keys {
				row.Keys = append(row.Keys, KeyRow{AccessKeyID: k.AccessKeyID, CreatedAt: k.CreatedAt})
			}
			out = append(out, row)
		}
	}
	return out
}

// row is one identity's overview row from its versions (in the vault's order) and the facts.
func (s *Service) row(vs []vault.Version, now time.Time, open map[vault.Identity]bool, failed map[vault.Identity]rotation.Record,
	held, blocked map[string]string) Row {
	id := vs[0].Identity
	row := Row{Identity: id, State: StateOK, Next: rotation.NextNone}
	var current *vault.Version
	for i, v := range vs {
		if v.State == vault.StateDestroyed {
			continue
		}
		row.Keys = append(row.Keys, KeyRow{AccessKeyID: v.AccessKeyID, State: v.State, CreatedAt: v.CreatedAt})
		if v.State == vault.StateCurrent {
			current = &vs[i]
			row.CurrentAge = now.Sub(v.CreatedAt)
		}
	}
	pol := s.Policy
	if current != nil {
		row.Next, row.NextKeyID, row.Due = rotation.NextRotate, current.AccessKeyID, current.CreatedAt.Add(pol.RotateAfter)
	}
	for _, v := range vs { // an old key's retirement comes first, as in a visit
		switch {
		case v.State == vault.StatePrevious && current != nil:
			row.Next, row.NextKeyID, row.Due = rotation.NextDeactivate, v.AccessKeyID, current.CurrentAt.Add(pol.DeactivateAfter)
		case v.State == vault.StateInactive:
			row.Next, row.NextKeyID, row.Due = rotation.NextDelete, v.AccessKeyID, v.InactiveAt.Add(pol.DeleteAfter)
		}
	}
	key := id.String()
	switch {
	case open[id]:
		row.State, row.Reason, row.Next, row.Due = StateRotating, "a rotation is under way", rotation.NextResume, now
	case failed[id].ID != 0:
		f := failed[id]
		row.State, row.Reason = StateFailing, fmt.Sprintf("attempt %d failed: %s", f.Attempt, f.Reason)
	case blocked[key] != "":
		row.State, row.Reason = StateBlocked, blocked[key]
	case held[key] != "":
		row.State, row.Reason = StateHeld, held[key]
	}
	return row
}

// pageOf filters, sorts and pages the rows.
func pageOf(rows []Row, q OverviewQuery) OverviewPage {
	var kept []Row
	for _, r := range rows {
		if (q.Account == "" || r.Identity.AccountID == q.Account) && (q.Team == "" || slices.Contains(r.Teams, q.Team)) &&
			(q.State == "" || r.State == q.State) {
			kept = append(kept, r)
		}
	}
	out := OverviewPage{Total: len(kept), Ages: []time.Duration{}}
	for _, r := range kept {
		if r.CurrentAge > 0 {
			out.Ages = append(out.Ages, r.CurrentAge)
		}
	}
	slices.SortStableFunc(kept, func(a, b Row) int {
		var c int
		if q.Sort == "name" {
			c = strings.Compare(a.Identity.AccountID+"/"+a.Identity.UserName, b.Identity.AccountID+"/"+b.Identity.UserName)
			if !q.Asc {
				c = -c
			}
			return c
		}
		c = int((a.CurrentAge - b.CurrentAge) / time.Second)
		if !q.Asc {
			c = -c
		}
		if c == 0 {
			c = strings.Compare(a.Identity.UserName, b.Identity.UserName)
		}
		return c
	})
	if q.Limit <= 0 {
		q.Limit = 100
	}
	start := min(max(q.Offset, 0), len(kept))
	end := min(start+q.Limit, len(kept))
	out.Rows = kept[start:end]
	return out
}
