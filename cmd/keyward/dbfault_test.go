package main

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/testenv"
)

// outcomes counts a load's answers by status, and keeps what was wrong with any.
type outcomes struct {
	mu      sync.Mutex
	byCode  map[int]int
	wrong   []string
	slowest time.Duration
}

func (o *outcomes) note(code int, took time.Duration, wrong string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.byCode == nil {
		o.byCode = map[int]int{}
	}
	o.byCode[code]++
	o.slowest = max(o.slowest, took)
	if wrong != "" && len(o.wrong) < 10 {
		o.wrong = append(o.wrong, wrong)
	}
}

func (o *outcomes) count(code int) int { o.mu.Lock(); defer o.mu.Unlock(); return o.byCode[code] }

// TestPostgresRestartMidPass restarts PostgreSQL (fast shutdown, then start) while a pass rotates 60
// users and the API is under load. While it is away, readiness is 503 and requests are 503 problem
// documents with Retry-After, answered at once, not hung; once it is back the pool recovers and the
// pass resumes without restarting Keyward; in the end every user was rotated exactly once with a
// key that works, every notice was delivered (twice only if it was in flight when the database
// went), and the audit trail verifies.
func TestPostgresRestartMidPass(t *testing.T) {
	const users = 60
	pg := testenv.NewPGServer(t)
	dsn := pg.DSN("")
	hooks, hook := newHookLog(t)
	w := newMotoWorld(t, "KEYWARD_VAULT_DRIVER=postgres", "KEYWARD_VAULT_DSN="+dsn, "KEYWARD_ROTATION_CONCURRENCY=2",
		"KEYWARD_ROTATION_INTERVAL=1h", "KEYWARD_ROTATION_ROTATE_AFTER=90d", "KEYWARD_DATABASE_STATEMENT_TIMEOUT=2s",
		"KEYWARD_NOTIFY_INTERVAL=200ms", "KEYWARD_SERVER_RATE_LIMIT_PER_IP=0", "KEYWARD_SERVER_RATE_LIMIT_PER_PRINCIPAL=0",
		fmt.Sprintf(`KEYWARD_NOTIFY_WEBHOOKS=[{url: "%s/hook", secret: "hook-secret-for-the-test", events: ["key.rotated"]}]`, hook))
	db, pre := w.dueUsers(t, dsn, users)
	member := w.loadTeam(t)
	p := startServe(t, w.env.with("KEYWARD_CLOUD=aws"))

	var (
		reads, ready outcomes
		stop         = make(chan struct{})
		wg           sync.WaitGroup
		client       = &http.Client{Timeout: 20 * time.Second}
	)
	get := func(path string, o *outcomes, header ...string) {
		req, _ := http.NewRequest("GET", "http://"+p.addr+path, nil)
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		start := time.Now()
		resp, err := client.Do(req)
		took := time.Since(start)
		if err != nil {
			o.note(0, took, err.Error())
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		wrong := ""
		switch {
		case resp.StatusCode == http.StatusServiceUnavailable && path != "/readyz" &&
			(resp.Header.Get("Retry-After") == "" || !strings.Contains(resp.Header.Get("Content-Type"), "application/problem+json")):
			wrong = fmt.Sprintf("a 503 without Retry-After or a problem document: %s", body)
		case resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusServiceUnavailable:
			wrong = fmt.Sprintf("%d %s", resp.StatusCode, body)
		}
		o.note(resp.StatusCode, took, wrong)
	}
	loop := func(fn func()) {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				fn()
			}
		})
	}
	for range 2 {
		loop(func() { get("/v1/teams/payments/credentials", &reads, "X-API-Key", member) })
	}
	loop(func() { get("/readyz", &ready); time.Sleep(50 * time.Millisecond) })

	for deadline := time.Now().Add(60 * time.Second); rotated(db) < 15; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the pass did not get going:\n%s", p.logs.String())
		}
	}
	wentAway := time.Now()
	pg.Stop()
	time.Sleep(3 * time.Second)
	readsAway, readyAway := reads.count(http.StatusServiceUnavailable), ready.count(http.StatusServiceUnavailable)
	pg.Start()
	back := time.Now()
	okBefore := reads.count(http.StatusOK)

	for deadline := time.Now().Add(120 * time.Second); rotated(db) < users; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d rotated two minutes after the database came back:\n%s", rotated(db), users, p.logs.String())
		}
	}
	waitOutboxDrained(t, db)
	close(stop)
	wg.Wait()

	if readsAway == 0 || readyAway == 0 {
		t.Fatalf("with the database away: %d reads and %d readiness probes answered 503", readsAway, readyAway)
	}
	if reads.count(http.StatusOK) == okBefore {
		t.Fatal("no read succeeded after the database came back: the pool did not recover")
	}
	if len(reads.wrong)+len(ready.wrong) > 0 {
		t.Fatalf("wrong answers: %v %v", reads.wrong, ready.wrong)
	}
	if reads.slowest > 10*time.Second || ready.slowest > 10*time.Second {
		t.Fatalf("a request hung: slowest read %s, readiness %s", reads.slowest, ready.slowest)
	}
	w.checkRotatedOnce(t, db, pre, users)
	hooks.checkOnce(t, users, wentAway.Add(-time.Second), back) // but those in flight when the database went
	w.env.must(t, 0, "", "audit", "verify")
	t.Logf("reads: %v (slowest %s); readiness: %v; %d reads and %d probes were 503 in the 3 s away", reads.byCode,
		reads.slowest.Round(time.Millisecond), ready.byCode, readsAway, readyAway)
}
