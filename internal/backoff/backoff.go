// Package backoff is the one rule for waiting longer after each failure in a row, used wherever
// Keyward retries: a failed rotation, a notification, an audit sink, a key under verification, a
// failed login's answer. Attempts are counted by the caller (often durably), so the rule is a pure
// function of the count.
package backoff

import "time"

// Exponential is the wait after the n-th failure in a row (n ≥ 1): first, doubled for each failure
// after the first, never more than limit. n < 1 counts as 1.
func Exponential(first, limit time.Duration, n int) time.Duration {
	d := first
	for i := 1; i < n && d < limit; i++ {
		d *= 2
	}
	return min(d, limit)
}
