package rotation

import (
	"fmt"
	"time"
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
