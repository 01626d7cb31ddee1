package rotation

import (
	"time"

	"github.com/keyward/keyward/internal/config"
)

// parseDuration reads durations as the configuration does (Go syntax or whole days).
func parseDuration(s string) (d time.Duration, err error) { return config.ParseDuration(s) }
