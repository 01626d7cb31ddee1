package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Duration is a time.Duration that configuration files and environment variables write in Go syntax
// ("90s", "1h30m") or with a leading number of days ("90d", "1d12h").
type Duration time.Duration

// Std returns d as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

// String formats d the way ParseDuration reads it, using days where they divide evenly.
func (d Duration) String() string {
	const day = 24 * time.Hour
	td := time.Duration(d)
	if td >= day && td%day == 0 {
		return strconv.FormatInt(int64(td/day), 10) + "d"
	}
	if td > day {
		return strconv.FormatInt(int64(td/day), 10) + "d" + (td % day).String()
	}
	return td.String()
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(unmarshal func(any) error) error {
	var s string
	if err := unmarshal(&s); err != nil {
		return fmt.Errorf("want a duration such as 30s, 10m, 36h or 90d")
	}
	v, err := ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML implements yaml.Marshaler.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) { return []byte(strconv.Quote(d.String())), nil }

// maxDays keeps days*24h inside an int64 of nanoseconds.
const maxDays = int64(1<<63-1) / int64(24*time.Hour)

// ParseDuration reads a non-negative duration in Go syntax, optionally led by whole days: "90d",
// "1d12h", "10m", "1.5h".
func ParseDuration(s string) (time.Duration, error) {
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
