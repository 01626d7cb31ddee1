package httpapi

import (
	"fmt"
	"testing"
)

// TestLimiterIsBounded: a flood from more addresses than it tracks keeps the limiter at its bound,
// the least recently seen dropped, while an address seen throughout keeps its bucket (and its limit).
func TestLimiterIsBounded(t *testing.T) {
	l := newLimiter(0.01) // a burst of 1, then one request every 100 s: none comes back while the test runs
	if ok, _ := l.allow("203.0.113.1"); !ok {
		t.Fatal("the burst was refused")
	}
	for i := range maxTracked + 5000 {
		l.allow(fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255))
		if i%1000 == 0 {
			l.buckets.Get("203.0.113.1") // seen again: stays
		}
	}
	if n := l.buckets.Len(); n != maxTracked {
		t.Fatalf("%d buckets, want the bound %d", n, maxTracked)
	}
	if ok, _ := l.allow("203.0.113.1"); ok {
		t.Fatal("an address kept in the LRU lost its limit")
	}
}
