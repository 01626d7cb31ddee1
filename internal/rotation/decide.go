package rotation

import (
	"fmt"
	"time"

	"github.com/keyward/keyward/internal/vault"
)

// rotationDecision says when a user's current key is to be replaced, and as which attempt.
type rotationDecision struct {
	Due     time.Time // when the key is to be replaced (at or before now: now)
	Attempt int       // 1, or one more than the failed rotations in a row before this one
	Reason  string    // why later than the key's age says (backing off after failures); "" otherwise
}

// rotationFacts are what decides when a key is replaced.
type rotationFacts struct {
	CreatedAt time.Time                 // when the current key was made
	Last      *Record                   // the user's last finished rotation (nil: none known)
	Force     bool                      // rotate now, whatever the key's age
	Backoff   func(n int) time.Duration // the wait after n failures in a row
	Now       time.Time
}

// decideRotation is the one rule for when a key is replaced, for a visit (which acts on it) and a
// plan (which tells it): RotateAfter after the key was made, or now when forced — and never before a
// failed rotation's backoff has run out, unless forced. It reads nothing.
func decideRotation(pol Policy, f rotationFacts) rotationDecision {
	d := rotationDecision{Due: f.CreatedAt.Add(pol.RotateAfter), Attempt: 1}
	if f.Force {
		d.Due = f.Now
	}
	if last := f.Last; last != nil && last.Outcome == OutcomeFailed {
		d.Attempt = last.Attempt + 1
		if wait := last.FinishedAt.Add(f.Backoff(last.Attempt)); !f.Force && wait.After(d.Due) && wait.After(f.Now) {
			d.Due = wait
			d.Reason = fmt.Sprintf("backing off after %d failed attempts until %s", last.Attempt, wait.Format(time.RFC3339))
		}
	}
	return d
}

// due says whether the decision is to rotate now.
func (d rotationDecision) due(now time.Time) bool { return !d.Due.After(now) }

// retirementStep is the next step of one old version: its deactivation (a previous key) or its
// deletion (an inactive key Keyward retired), and when it is due.
type retirementStep struct {
	Next    NextAction // NextDeactivate or NextDelete
	Version vault.Version
	Due     time.Time
	Leaked  bool // reported exposed: deactivated whether in use or not
}

// decideRetirement is the one rule for retiring old keys, for a visit and a plan: a previous key is
// deactivated DeactivateAfter after the current one took over (unless it is still in use — that
// needs the cloud, and is checked by the caller); an inactive key is deleted DeleteAfter after its
// deactivation. A leaked key is deactivated at once (in use or not) and deleted LeakDeleteAfter
// after its deactivation. It reads nothing; the steps come in the versions' order.
func decideRetirement(pol Policy, current *vault.Version, versions []vault.Version, leaks map[string]Leak) []retirementStep {
	var steps []retirementStep
	for _, v := range versions {
		leak, leaked := leaks[v.AccessKeyID]
		switch {
		case v.State == vault.StatePrevious && leaked:
			steps = append(steps, retirementStep{Next: NextDeactivate, Version: v, Due: leak.ReportedAt, Leaked: true})
		case v.State == vault.StatePrevious && current != nil:
			steps = append(steps, retirementStep{Next: NextDeactivate, Version: v, Due: current.CurrentAt.Add(pol.DeactivateAfter)})
		case v.State == vault.StateInactive && leaked:
			steps = append(steps, retirementStep{Next: NextDelete, Version: v, Due: v.InactiveAt.Add(pol.leakDeleteAfter()), Leaked: true})
		case v.State == vault.StateInactive:
			steps = append(steps, retirementStep{Next: NextDelete, Version: v, Due: v.InactiveAt.Add(pol.DeleteAfter)})
		}
	}
	return steps
}

func (p Policy) leakDeleteAfter() time.Duration {
	if p.LeakDeleteAfter > 0 {
		return p.LeakDeleteAfter
	}
	return time.Hour
}
