package rotation

import (
	"fmt"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/keyward/keyward/internal/cloud"
	"github.com/keyward/keyward/internal/duration"
	"github.com/keyward/keyward/internal/vault"
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
	// LeakDeleteAfter is how long a key reported exposed is kept, deactivated, before it is deleted
	// (for forensics; default 1 hour).
	LeakDeleteAfter time.Duration
	// DeleteForeignInactiveAfter allows deleting an inactive key Keyward did not retire, once it is
	// this old, to make room for a new key. Zero: never.
	DeleteForeignInactiveAfter time.Duration
	// Rules override the policy for the users they match; the first match wins, and tags win over it.
	Rules []Rule
}

// Rule matches users by IAM path prefix and/or name glob. Zero durations keep the policy's.
type Rule struct {
	PathPrefix      string
	NameGlob        string
	RotateAfter     time.Duration
	DeactivateAfter time.Duration
	DeleteAfter     time.Duration
	Exempt          bool
}

func (r Rule) matches(u cloud.User) bool {
	if r.PathPrefix != "" && !strings.HasPrefix(u.Path, r.PathPrefix) {
		return false
	}
	if r.NameGlob != "" {
		if ok, _ := path.Match(r.NameGlob, u.Name); !ok {
			return false
		}
	}
	return r.PathPrefix != "" || r.NameGlob != ""
}

// DefaultPolicy is the policy without configuration: 90, then 10, then 10 days.
func DefaultPolicy() Policy {
	return Policy{
		RotateAfter: 90 * 24 * time.Hour, DeactivateAfter: 10 * 24 * time.Hour, DeleteAfter: 10 * 24 * time.Hour,
		QuietPeriod: 24 * time.Hour, VerifyTimeout: 60 * time.Second,
	}
}

// stillInUse reports whether an old key must be held rather than deactivated: it signed a request
// after its replacement became current, has not been quiet for QuietPeriod since, and the policy does
// not force deactivation.
func (p Policy) stillInUse(lastUsed, replacedAt, now time.Time) bool {
	return !p.ForceDeactivate && lastUsed.After(replacedAt) && now.Sub(lastUsed) < p.QuietPeriod
}

// roomFor returns the key that may be deleted to make room for a new one, or nil: an inactive key
// Keyward retired itself (its vault state is inactive), or an inactive key Keyward does not know once
// DeleteForeignInactiveAfter allows it. Never an active key. states maps key ids to vault states.
func (p Policy) roomFor(keys []cloud.AccessKey, states map[string]vault.State, now time.Time) *cloud.AccessKey {
	for i, k := range keys {
		if k.Status != cloud.KeyInactive {
			continue
		}
		state, known := states[k.ID]
		retiredByUs := known && state == vault.StateInactive
		foreignAllowed := !known && p.DeleteForeignInactiveAfter > 0 && now.Sub(k.CreatedAt) >= p.DeleteForeignInactiveAfter
		if retiredByUs || foreignAllowed {
			return &keys[i]
		}
	}
	return nil
}

// MaxKeyLife is the longest a key can exist under the policy when nothing holds it: it is replaced
// at RotateAfter, deactivated DeactivateAfter later, deleted DeleteAfter after that — each step up to
// one scheduler interval late, and an interval can run 10% long (jitter). Not counted: the length of
// a pass itself, a key held because it is still in use, a blocked user, failures (docs/POLICY.md).
func (p Policy) MaxKeyLife(interval time.Duration) time.Duration {
	return p.RotateAfter + p.DeactivateAfter + p.DeleteAfter + 3*(interval+interval/10)
}

// ExemptBy says who exempted a user from rotation: "tag keyward:exempt", "group NAME", "rule N"
// (1-based, of rotation.rules); "" when it is not exempt.
func (p Policy) ExemptBy(u cloud.User, groups []string) string {
	switch {
	case u.Tags[TagExempt] == "true":
		return "tag " + TagExempt
	case p.ExemptGroup != "" && slices.Contains(groups, p.ExemptGroup):
		return "group " + p.ExemptGroup
	}
	for i, r := range p.Rules {
		if r.matches(u) {
			if r.Exempt {
				return fmt.Sprintf("rule %d", i+1)
			}
			break
		}
	}
	return ""
}

// For returns the policy for one user, with its tag overrides applied, and whether it is exempt.
func (p Policy) For(u cloud.User, groups []string) (Policy, bool, error) {
	if u.Tags[TagExempt] == "true" || (p.ExemptGroup != "" && slices.Contains(groups, p.ExemptGroup)) {
		return p, true, nil
	}
	for _, r := range p.Rules {
		if !r.matches(u) {
			continue
		}
		if r.Exempt {
			return p, true, nil
		}
		for _, o := range []struct {
			dst *time.Duration
			v   time.Duration
		}{
			{&p.RotateAfter, r.RotateAfter}, {&p.DeactivateAfter, r.DeactivateAfter}, {&p.DeleteAfter, r.DeleteAfter},
		} {
			if o.v > 0 {
				*o.dst = o.v
			}
		}
		break
	}
	for tag, field := range map[string]*time.Duration{
		TagRotateAfter: &p.RotateAfter, TagDeactivateAfter: &p.DeactivateAfter, TagDeleteAfter: &p.DeleteAfter,
	} {
		v, ok := u.Tags[tag]
		if !ok {
			continue
		}
		d, err := duration.Parse(v) // the configuration's syntax: 30d, 12h, 1d12h
		if err != nil || d <= 0 {
			return p, false, fmt.Errorf("tag %s=%q on %s: want a positive duration such as 30d or 12h", tag, v, u.Name)
		}
		*field = d
	}
	return p, false, nil
}
