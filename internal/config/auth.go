package config

import (
	"fmt"
	"net/netip"
	"net/url"
	"time"
)

var roles = []string{"admin", "operator", "auditor", "member"}

// Prefixes parses CIDRs that validate has accepted.
func Prefixes(list []string) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(list))
	for _, c := range list {
		if p, err := netip.ParsePrefix(c); err == nil {
			out = append(out, p.Masked())
		}
	}
	return out
}

func cidrs(report func(key, format string, args ...any), key string, list []string) {
	for i, c := range list {
		if _, err := netip.ParsePrefix(c); err != nil {
			report(fmt.Sprintf("%s[%d]", key, i), "%q is not a CIDR such as 10.0.0.0/8 or 2001:db8::/32", c)
		}
	}
}

func (a *Auth) validate(report func(key, format string, args ...any)) {
	if a.Issuer == "" {
		report("auth.issuer", "must not be empty")
	}
	if a.Audience == "" {
		report("auth.audience", "must not be empty")
	}
	if a.TokenTTL < Duration(10*time.Second) || a.TokenTTL > Duration(24*time.Hour) {
		report("auth.token_ttl", "want 10s to 24h (got %s)", a.TokenTTL)
	}
	if a.SigningKeyRotation < a.TokenTTL {
		report("auth.signing_key_rotation", "want at least auth.token_ttl (got %s)", a.SigningKeyRotation)
	}
	for i, r := range a.RequireMFA {
		oneOf(report, fmt.Sprintf("auth.require_mfa[%d]", i), r, roles...)
	}
	cidrs(report, "auth.allowed_cidrs", a.AllowedCIDRs)
	g := a.Argon2
	if g.Parallelism < 1 || g.Parallelism > 255 {
		report("auth.argon2.parallelism", "want 1 to 255 (got %d)", g.Parallelism)
	}
	if g.Iterations < 1 || g.Iterations > 100 {
		report("auth.argon2.iterations", "want 1 to 100 (got %d)", g.Iterations)
	}
	if g.MemoryKiB < 8*max(g.Parallelism, 1) || g.MemoryKiB > 4*1024*1024 {
		report("auth.argon2.memory_kib", "want 8×parallelism to 4194304 (got %d)", g.MemoryKiB)
	}
	if a.MaxConcurrentHashes < 0 || a.MaxConcurrentHashes > 1024 {
		report("auth.max_concurrent_hashes", "want 0 (fit 256 MiB) to 1024 (got %d)", a.MaxConcurrentHashes)
	}
	a.Lockout.validate(report)
	o := a.OIDC
	if o.Issuer == "" {
		return
	}
	if u, err := url.Parse(o.Issuer); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		report("auth.oidc.issuer", "want an https:// URL (got %q)", o.Issuer)
	}
	if o.ClientID == "" {
		report("auth.oidc.client_id", "must be set when auth.oidc.issuer is")
	}
	if o.ClientSecret.IsZero() {
		report("auth.oidc.client_secret", "must be set (or auth.oidc.client_secret_file) when auth.oidc.issuer is")
	}
	if u, err := url.Parse(o.RedirectURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		report("auth.oidc.redirect_url", "want the URL of Keyward's /v1/auth/oidc/callback (got %q)", o.RedirectURL)
	}
	if o.GroupsClaim == "" {
		report("auth.oidc.groups_claim", "must not be empty")
	}
	if len(o.Rules) == 0 {
		report("auth.oidc.rules", "map at least one group to a role: without rules nobody can sign in")
	}
	for i, r := range o.Rules {
		key := fmt.Sprintf("auth.oidc.rules[%d]", i)
		if r.Group == "" {
			report(key+".group", "must not be empty")
		}
		oneOf(report, key+".role", r.Role, roles...)
	}
}

// validate checks the lockout's limits, duration and delays.
func (l AuthLockout) validate(report func(key, format string, args ...any)) {
	if l.MaxFailures < 0 {
		report("auth.lockout.max_failures", "must not be negative (0: never lock)")
	}
	if l.IPMaxFailures < 0 {
		report("auth.lockout.ip_max_failures", "must not be negative (0: never lock)")
	}
	if l.Duration <= 0 {
		report("auth.lockout.duration", "must be positive")
	}
	if l.Delay < 0 || l.MaxDelay < l.Delay || l.MaxDelay > Duration(time.Minute) {
		report("auth.lockout.max_delay", "want auth.lockout.delay to 1m (got delay %s, max_delay %s)", l.Delay, l.MaxDelay)
	}
}
