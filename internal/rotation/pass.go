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
	Deactivated int `json:"deactivated"`
	Deleted     int `json:"deleted"`
	Held        int `json:"held"`
	Blocked     int `json:"blocked"`
	Failed      int `json:"failed"`
	Skipped     int `json:"skipped"`
	Exempt      int `json:"exempt"`
}

// Report is the outcome of a pass: the counts, one result per user, and what could not be listed.
type Report struct {
	Summary Summary  `json:"summary"`
	Users   []Result `json:"users"`
	Errors  []string `json:"errors,omitempty"` // accounts that could not be listed
}

// Add counts one outcome.
func (s *Summary) Add(o Outcome) {
	s.Scanned++
	switch o {
	case Rotated:
		s.Rotated++
	case Deactivated:
		s.Deactivated++
	case Deleted:
		s.Deleted++
	case Held:
		s.Held++
	case Blocked:
		s.Blocked++
	case Failed:
		s.Failed++
	case Exempt:
		s.Exempt++
	default:
		s.Skipped++
	}
}

// Pass visits every managed user of every account once, Concurrency at a time. A user that fails
// does not stop the pass; an account that cannot be listed is reported and the others go on. The
// error is only for a pass cut short (context cancelled, a test hook).
func (e *Engine) Pass(ctx context.Context, opts PassOptions) (Report, error) {
	if opts.Concurrency <= 0 {
		opts.Concurrency = 4
	}
	var rep Report
	accounts, err := e.Cloud.Accounts(ctx)
	if err != nil {
		rep.Errors = append(rep.Errors, fmt.Sprintf("list accounts: %v", err))
		return rep, nil
	}
	var (
		mu    sync.Mutex
		found int
		done  int
		first error // a visit cut short: no more are started
	)
	// At most Concurrency visits at once: Go waits for a place. A visit cut short does not cancel
	// the others (each stops safely on its own), it only stops more from starting.
	var g errgroup.Group
	g.SetLimit(opts.Concurrency)
	for _, a := range accounts {
		if opts.AccountID != "" && a.ID != opts.AccountID {
			continue
		}
		err := e.Cloud.ListUsers(ctx, a.ID, func(u cloud.User) error {
			if len(opts.Users) > 0 && !slices.Contains(opts.Users, u.Name) {
				return nil
			}
			mu.Lock()
			found++
			stop := first
			mu.Unlock()
			if stop != nil {
				return stop
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			g.Go(func() error {
				res, err := e.Visit(ctx, u, VisitOptions{Force: opts.Force})
				mu.Lock()
				defer mu.Unlock()
				if err != nil && first == nil {
					first = err
				}
				if err == nil {
					rep.Users = append(rep.Users, res)
					rep.Summary.Add(res.Outcome)
				}
				done++
				if opts.Progress != nil {
					opts.Progress(done, found)
				}
				return nil
			})
			return nil
		})
		if err != nil {
			mu.Lock()
			stopped := first != nil
			mu.Unlock()
			if stopped || ctx.Err() != nil {
				break
			}
			rep.Errors = append(rep.Errors, fmt.Sprintf("list users of account %s: %v", a.ID, err))
		}
	}
	_ = g.Wait() // the visits report through first, not through the group
	slices.SortFunc(rep.Users, func(a, b Result) int {
		if a.Identity.AccountID != b.Identity.AccountID {
			return strings.Compare(a.Identity.AccountID, b.Identity.AccountID)
		}
		return strings.Compare(a.Identity.UserName, b.Identity.UserName)
	})
	if first != nil {
		return rep, first
	}
	return rep, ctx.Err()
}
