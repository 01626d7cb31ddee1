// Package duration reads and writes the durations Keyward's configuration, IAM tags and API
// parameters use: Go's syntax ("90s", "1h30m"), optionally led by whole days ("90d", "1d12h"). A
// leaf, so that the engine, the API and the configuration share one syntax without importing each
// other.
package duration

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Format writes d the way Parse reads it, using days where they divide evenly: 90d, 1d12h0m0s, 10m0s.
func Format(d time.Duration) string {
	const day = 24 * time.Hour
	if d >= day && d%day == 0 {
		return strconv.FormatInt(int64(d/day), 10) + "d"
	}
	if d > day {
		return strconv.FormatInt(int64(d/day), 10) + "d" + (d % day).String()
	}
	return d.String()
}

// maxDays keeps days*24h inside an int64 of nanoseconds.
const maxDays = int64(1<<63-1) / int64(24*time.Hour)

// Parse reads a non-negative duration in Go syntax, optionally led by whole days: "90d",
// "1d12h", "10m", "1.5h".
func Parse(s string) (time.Duration, error) {
	in := s
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, fmt.Errorf("empty duration (use for example 30s, 10m, 36h or 90d)")
	}
	if strings.HasPrefix(s, "-") {
		return 0, fmt.Errorf("invalid duration %q: must not be negative", in)
	}
	var total time.Duration
	if i := strings.IndexByte(s, 'd'); i >= 0 {
		days, err := strconv.ParseInt(s[:i], 10, 64)
		if err != nil || days < 0 {
			return 0, fmt.Errorf("invalid duration %q: days must be a whole number, as in 90d or 1d12h", in)
		}
		if days > maxDays {
			return 0, fmt.Errorf("invalid duration %q: too long", in)
		}
		total = time.Duration(days) * 24 * time.Hour
		s = s[i+1:]
		if s == "" {
			return total, nil
		}
	}
	rest, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q: use units s, m, h or d, as in 30s, 10m, 36h or 90d", in)
	}
	if rest < 0 || total+rest < total {
		return 0, fmt.Errorf("invalid duration %q: out of range", in)
	}
	return total + rest, nil
}
