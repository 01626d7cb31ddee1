package web

import (
	"testing"
	"time"
)

// TestAge: ages read as words, singular where one ("1 minute", never "1 minutes" or "0 minutes").
func TestAge(t *testing.T) {
	for d, want := range map[time.Duration]string{
		20 * time.Second: "under a minute", time.Minute: "1 minute", 90 * time.Second: "1 minute", 59 * time.Minute: "59 minutes",
		time.Hour: "1 hour", 47 * time.Hour: "47 hours", 48 * time.Hour: "2 days", 400 * 24 * time.Hour: "400 days",
	} {
		if got := age(d); got != want {
			t.Errorf("age(%s) = %q, want %q", d, got, want)
		}
	}
}
