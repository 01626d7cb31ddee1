package rotation

import (
	"fmt"
	"slices"
	"time"

	"github.com/keyward/keyward/internal/cloud"
)

// Tags that override the policy for one IAM user.
const (
	TagRotateAfter     = "keyward:rotate-after"
	TagDeactivateAfter = "keyward:deactivate-after"
	TagDeleteAfter     = "keyward:delete-after"
	TagExempt          = "keyward:exempt"
)

// Policy says when keys are rotated, deactivated and deleted.
type Policy struct {
	RotateAfter     time.Duration // key age at which it is replaced
	DeactivateAfter time.Duration // after the replacement became current
	DeleteAfter     time.Duration // after deactivation
	// QuietPeriod: an old key used after its replacement became current is held until it has not
	// been used for this long (or ForceDeactivate).
	QuietPeriod     time.Duration
	ForceDeactivate bool
	VerifyTimeout   time.Duration
	ExemptGroup     string
	// DeleteForeignInactiveAfter allows deleting an inactive key Keyward did not retire, once it is
	// this old, to make room for a new key. Zero: never.
	DeleteForeignInactiveAfter time.Duration
}

// DefaultPolicy is the policy without configuration: 90, then 10, then 10 days.
func DefaultPolicy() Policy {
	return Policy{
		RotateAfter: 90 * 24 * time.Hour, DeactivateAfter: 10 * 24 * time.Hour, DeleteAfter: 10 * 24 * time.Hour,
		QuietPeriod: 24 * time.Hour, VerifyTimeout: 60 * time.Second,
	}
}

// MaxKeyLife is the longest a key can exist under the policy when nothing holds it: it is replaced
// at RotateAfter, deactivated DeactivateAfter later, deleted DeleteAfter after that — plus up to one
// scheduler interval of lateness at each of the three steps.
func (p Policy) MaxKeyLife(interval time.Duration) time.Duration {
	return p.RotateAfter + p.DeactivateAfter + p.DeleteAfter + 3*interval
}

// For returns the policy for one user, with its tag overrides applied, and whether it is exempt.
func (p Policy) For(u cloud.User, groups []string) (Policy, bool, error) {
	if u.Tags[TagExempt] == "true" || (p.ExemptGroup != "" && slices.Contains(groups, p.ExemptGroup)) {
		return p, true, nil
	}
	for tag, field := range map[string]*time.Duration{
		TagRotateAfter: &p.RotateAfter, TagDeactivateAfter: &p.DeactivateAfter, TagDeleteAfter: &p.DeleteAfter,
	} {
		v, ok := u.Tags[tag]
		if !ok {
			continue
		}
		d, err := parseDuration(v)
		if err != nil || d <= 0 {
			return p, false, fmt.Errorf("tag %s=%q on %s: want a positive duration such as 30d or 12h", tag, v, u.Name)
		}
		*field = d
	}
	return p, false, nil
}
