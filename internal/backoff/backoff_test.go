package backoff_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/backoff"
)

func TestExponential(t *testing.T) {
	var got []time.Duration
	for n := range 8 {
		got = append(got, backoff.Exponential(30*time.Second, 5*time.Minute, n))
	}
	if want := "[30s 30s 1m0s 2m0s 4m0s 5m0s 5m0s 5m0s]"; fmt.Sprint(got) != want {
		t.Fatalf("got %v, want %v", got, want)
	}
	// A count far beyond the limit neither loops long nor overflows.
	if d := backoff.Exponential(time.Second, 24*time.Hour, 1<<40); d != 24*time.Hour {
		t.Fatalf("a huge count: %s", d)
	}
}
