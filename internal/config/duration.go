package config

import (
	"fmt"
	"strconv"
	"time"

	"github.com/keyward/keyward/internal/duration"
)

// Duration is a time.Duration that configuration files and environment variables write in Go syntax
// ("90s", "1h30m") or with a leading number of days ("90d", "1d12h").
type Duration time.Duration

// Std returns d as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

// String formats d the way duration.Parse reads it, using days where they divide evenly.
func (d Duration) String() string { return duration.Format(time.Duration(d)) }

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(unmarshal func(any) error) error {
	var s string
	if err := unmarshal(&s); err != nil {
		return fmt.Errorf("want a duration such as 30s, 10m, 36h or 90d")
	}
	v, err := duration.Parse(s)
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
