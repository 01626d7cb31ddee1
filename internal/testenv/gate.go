package testenv

import (
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Gate is a reverse proxy in front of a test server (moto) that can slow every request down or hold
// them all, as a cloud API that answers slowly or hangs. Requests keep the Host they were signed for,
// so that moto still checks their signatures.
type Gate struct {
	URL     string
	Latency atomic.Int64 // added to each request, in nanoseconds
	Held    atomic.Int64 // requests waiting at the gate now

	mu     sync.Mutex
	closed chan struct{} // nil: open; otherwise requests wait until it is closed
}

// NewGate starts a gate in front of upstream, closed by the end of the test.
func NewGate(t testing.TB, upstream string) *Gate {
	t.Helper()
	target, err := url.Parse(upstream)
	if err != nil {
		t.Fatal(err)
	}
	g := &Gate{}
	proxy := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if d := time.Duration(g.Latency.Load()); d > 0 {
			time.Sleep(d)
		}
		g.mu.Lock()
		wait := g.closed
		g.mu.Unlock()
		if wait != nil {
			g.Held.Add(1)
			select {
			case <-wait:
			case <-r.Context().Done():
			}
			g.Held.Add(-1)
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(func() { g.Open(); srv.Close() })
	g.URL = srv.URL
	return g
}

// Hold makes every request from now on wait until Open.
func (g *Gate) Hold() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed == nil {
		g.closed = make(chan struct{})
	}
}

// Open lets the held requests, and every later one, through.
func (g *Gate) Open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed != nil {
		close(g.closed)
		g.closed = nil
	}
}
