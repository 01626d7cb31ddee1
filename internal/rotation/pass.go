package rotation

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/keyward/keyward/internal/cloud"
)

// PassOptions narrows and shapes one pass.
type PassOptions struct {
	Users       []string // only these user names (all when empty)
	AccountID   string   // only this account (all when empty)
	Force       bool     // rotate the selected users now, whatever their key's age
	Concurrency int      // users visited at once (default 4)
	// Progress, when set, is told after each user how many are done of how many are known so far.
	Progress func(done, known int)
}

// Summary counts a pass's outcomes.
type Summary struct {
	Scanned     int `json:"scanned"`
	Rotated     int `json:"rotated"`
	Deactivated int `json:"deactivated"` // keys deactivated
	Deleted     int `json:"deleted"`     // keys deleted
	Held        int `json:"held"`
	Blocked     int `json:"blocked"`
	Failed      int `json:"failed"`
	Skipped     int `json:"skipped"`
	Exempt      int `json:"exempt"`
	Denied      int `json:"denied"` // outside Keyward's permissions
}

// Report is the outcome of a pass: the counts, one result per user, and what could not be listed.
type Report struct {
	Summary Summary  `json:"summary"`
	Users   []Result `json:"users"`
	Errors  []string `json:"errors,omitempty"` // accounts that could not be listed
	// Interrupted counts the visits that failed on an error that passes (see Result.Interrupted).
	Interrupted int `json:"interrupted,omitempty"`
}

// Add counts one visit: its user's outcome, and every key it deactivated or deleted — a visit does
// more than its outcome says (a rotation may first delete a retired key to make room, or retire an
// old one), so Deactivated and Deleted count keys, the rest users. A planned visit (a dry run) has
// no actions: its outcome counts its key.
func (s *Summary) Add(r Result) {
	s.Scanned++
	switch r.Outcome {
	case Rotated:
		s.Rotated++
	case Deactivated, Deleted:
	case Held:
		s.Held++
	case Blocked:
		s.Blocked++
	case Failed:
		s.Failed++
	case Exempt:
		s.Exempt++
	case Denied:
		s.Denied++
	default:
		s.Skipped++
	}
	deactivated, deleted := 0, 0
	for _, a := range r.Actions {
		switch a.Kind {
		case KindDeactivated:
			deactivated++
		case KindDeleted, KindDeletedOrphan:
			deleted++
		}
	}
	if r.Outcome == Deactivated {
		deactivated = max(deactivated, 1)
	}
	if r.Outcome == Deleted {
		deleted = max(deleted, 1)
	}
	s.Deactivated += deactivated
	s.Deleted += deleted
}

// Pass visits every managed user of every account once, Concurrency at a time. A user that fails
// does not stop the pass; an account that cannot be listed is reported and the others go on. The
// error is only for a pass cut short (context cancelled, a test hook).
func (e *Engine) Pass(ctx context.Context, opts PassOptions) (Report, error) {
	if opts.Concurrency <= 0 {
		opts.Concurrency = 4
	}
	accounts, err := e.Cloud.Accounts(ctx)
	if err != nil {
		return Report{Errors: []string{fmt.Sprintf("list accounts: %v", err)}}, nil
	}
	p := &pass{e: e, opts: opts}
	// The open leaks, read once for every visit of the pass (a leak reported meanwhile is answered
	// by its own visit, and by the next pass).
	if p.leaks, err = e.leaksFor(ctx, VisitOptions{}); err != nil {
		return Report{Errors: []string{fmt.Sprintf("read leaks: %v", err)}}, nil
	}
	if p.leaks == nil {
		p.leaks = map[string]Leak{}
	}
	// At most Concurrency visits at once: Go waits for a place. A visit cut short does not cancel
	// the others (each stops safely on its own), it only stops more from starting.
	p.g.SetLimit(opts.Concurrency)
	for _, a := range accounts {
		if opts.AccountID != "" && a.ID != opts.AccountID {
			continue
		}
		err := e.Cloud.ListUsers(ctx, a.ID, func(u cloud.User) error { return p.start(ctx, u) })
		if err != nil {
			if p.stopped() || ctx.Err() != nil {
				break
			}
			p.rep.Errors = append(p.rep.Errors, fmt.Sprintf("list users of account %s: %v", a.ID, err))
		}
	}
	_ = p.g.Wait() // the visits report through first, not through the group
	rep := p.rep
	slices.SortFunc(rep.Users, func(a, b Result) int {
		if a.Identity.AccountID != b.Identity.AccountID {
			return strings.Compare(a.Identity.AccountID, b.Identity.AccountID)
		}
		return strings.Compare(a.Identity.UserName, b.Identity.UserName)
	})
	if p.first != nil {
		return rep, p.first
	}
	return rep, ctx.Err()
}

// pass is one pass's visits under way, and what they reported.
type pass struct {
	e     *Engine
	opts  PassOptions
	leaks map[string]Leak
	g     errgroup.Group
	mu    sync.Mutex
	rep   Report
	found int
	done  int
	first error // a visit cut short: no more are started
}

func (p *pass) stopped() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.first != nil
}

// start visits a user the listing found, when the pass selects it, once a place is free.
func (p *pass) start(ctx context.Context, u cloud.User) error {
	if len(p.opts.Users) > 0 && !slices.Contains(p.opts.Users, u.Name) {
		return nil
	}
	p.mu.Lock()
	p.found++
	stop := p.first
	p.mu.Unlock()
	if stop != nil {
		return stop
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	p.g.Go(func() error {
		res, err := p.e.Visit(ctx, u, VisitOptions{Force: p.opts.Force, leaks: p.leaks})
		p.mu.Lock()
		defer p.mu.Unlock()
		if err != nil && p.first == nil {
			p.first = err
		}
		if err == nil {
			p.rep.Users = append(p.rep.Users, res)
			p.rep.Summary.Add(res)
			if res.Interrupted {
				p.rep.Interrupted++
			}
		}
		p.done++
		if p.opts.Progress != nil {
			p.opts.Progress(p.done, p.found)
		}
		return nil
	})
	return nil
}
