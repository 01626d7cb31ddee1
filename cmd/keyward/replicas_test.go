package main

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/testenv"
)

// TestThreeReplicas runs three `keyward serve` on one PostgreSQL against moto, with 200 users due and
// the API under load on every replica, and SIGKILLs the scheduler's leader in the middle of its pass.
// Another replica leads within the lease; every user ends with exactly one current key that works,
// rotated once; no notice is delivered twice (beyond one in flight on the killed replica); the audit
// trail verifies; and the surviving replicas answered every request.
func TestThreeReplicas(t *testing.T) {
	const users, lease = 200, 2 * time.Second
	dsn := testenv.PostgresDSN(t)
	hooks, hook := newHookLog(t)
	sink := filepath.Join(t.TempDir(), "audit.jsonl") // one file sink, shared by the replicas of this host
	w := newMotoWorld(t, "KEYWARD_VAULT_DRIVER=postgres", "KEYWARD_VAULT_DSN="+dsn, "KEYWARD_AUDIT_FILE="+sink, "KEYWARD_AUDIT_SHIP_INTERVAL=200ms",
		fmt.Sprintf("KEYWARD_ROTATION_LEASE=%s", lease), "KEYWARD_ROTATION_CONCURRENCY=4", "KEYWARD_ROTATION_INTERVAL=1h",
		"KEYWARD_ROTATION_ROTATE_AFTER=90d", "KEYWARD_NOTIFY_INTERVAL=200ms",
		"KEYWARD_SERVER_RATE_LIMIT_PER_IP=0", "KEYWARD_SERVER_RATE_LIMIT_PER_PRINCIPAL=0",
		fmt.Sprintf(`KEYWARD_NOTIFY_WEBHOOKS=[{url: "%s/hook", secret: "hook-secret-for-the-test", events: ["key.rotated"]}]`, hook))
	db, pre := w.dueUsers(t, dsn, users)
	member := w.loadTeam(t)
	var key struct{ Key string } // an admin's, for /v1/status
	if err := json.Unmarshal([]byte(w.env.must(t, 0, "", "apikey", "create", "--name", "ops", "--role", "admin", "-o", "json").stdout), &key); err != nil {
		t.Fatal(err)
	}

	replicas := make([]*serveProcess, 3)
	for i := range replicas {
		replicas[i] = startServe(t, w.env.with("KEYWARD_CLOUD=aws"))
	}
	leaderOf := func(p *serveProcess) string { // the replica id (host/pid/nonce) a replica's status names as leader
		code, body := httpGet(t, "http://"+p.addr+"/v1/status", "X-API-Key", key.Key)
		var st struct {
			Cluster struct {
				Leader *struct{ Replica string }
			}
		}
		if code != http.StatusOK || json.Unmarshal([]byte(body), &st) != nil {
			t.Fatalf("/v1/status = %d %s", code, body)
		}
		if st.Cluster.Leader == nil {
			return ""
		}
		return st.Cluster.Leader.Replica
	}
	var leaderID string
	for deadline := time.Now().Add(30 * time.Second); leaderID == "" && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		leaderID = leaderOf(replicas[1])
	}
	var leader *serveProcess
	for _, p := range replicas {
		if strings.Contains(leaderID, fmt.Sprintf("/%d/", p.cmd.Process.Pid)) {
			leader = p
		}
	}
	if leader == nil {
		t.Fatalf("no replica leads (status says %q)", leaderID)
	}

	// The API under load on every replica, until the end.
	var (
		killed            atomic.Pointer[serveProcess]
		requests, failed  atomic.Int64
		failures          []string
		stopLoad          = make(chan struct{})
		loadWG            sync.WaitGroup
		client            = &http.Client{Timeout: 10 * time.Second}
		failuresMu        sync.Mutex
		killedDuringCalls atomic.Int64
	)
	for _, p := range replicas {
		for range 2 {
			loadWG.Go(func() {
				for {
					select {
					case <-stopLoad:
						return
					default:
					}
					if killed.Load() == p {
						return
					}
					req, _ := http.NewRequest("GET", "http://"+p.addr+"/v1/teams/payments/credentials", nil)
					req.Header.Set("X-API-Key", member)
					resp, err := client.Do(req)
					requests.Add(1)
					status := 0
					if err == nil {
						status = resp.StatusCode
						resp.Body.Close()
					}
					if status != http.StatusOK {
						if killed.Load() == p {
							killedDuringCalls.Add(1) // in flight on the replica killed under it
							return
						}
						failed.Add(1)
						failuresMu.Lock()
						failures = append(failures, fmt.Sprintf("%d %v", status, err))
						failuresMu.Unlock()
					}
				}
			})
		}
	}

	// SIGKILL the leader once its pass is well under way.
	rotatedSoFar := func() int { return rotated(db) }
	for deadline := time.Now().Add(60 * time.Second); rotatedSoFar() < 40; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the leader's pass did not get going:\n%s", leader.logs.String())
		}
	}
	killed.Store(leader)
	killedAt := time.Now()
	if err := leader.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	atKill := rotatedSoFar()
	if atKill >= users {
		t.Fatalf("the pass was over (%d rotated) before the kill", atKill)
	}
	var survivor *serveProcess
	for _, p := range replicas {
		if p != leader {
			survivor = p
		}
	}
	var next string
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if next = leaderOf(survivor); next != "" && next != leaderID {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no replica took the lead over")
		}
	}
	tookOver := time.Since(killedAt)
	if tookOver > lease+lease/2 {
		t.Fatalf("the new leader took over %s after the kill, with a lease of %s", tookOver, lease)
	}
	for deadline := time.Now().Add(120 * time.Second); rotatedSoFar() < users; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d rotated two minutes after the kill", rotatedSoFar(), users)
		}
	}
	waitOutboxDrained(t, db) // the notices of the last rotations
	close(stopLoad)
	loadWG.Wait()

	w.checkRotatedOnce(t, db, pre, users)
	hooks.checkOnce(t, users, killedAt.Add(-time.Second), killedAt) // but one the killed replica had in flight
	// The sink got every record, each once, but for at most one batch the killed leader had sent and
	// not yet recorded as sent (delivery is at least once; a record carries its seq to be dropped).
	var verified struct{ Records int64 }
	if err := json.Unmarshal([]byte(w.env.must(t, 0, "", "audit", "verify", "-o", "json").stdout), &verified); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		seen, dupes := sinkSeqs(t, sink)
		if int64(len(seen)) >= verified.Records {
			for seq := int64(1); seq <= verified.Records; seq++ {
				if !seen[seq] {
					t.Fatalf("the sink lacks record %d", seq)
				}
			}
			if len(dupes) > 500 || len(dupes) > 0 && dupes[len(dupes)-1]-dupes[0] >= int64(len(dupes)) {
				t.Fatalf("the sink got %d records twice, not one batch: %v", len(dupes), dupes[:min(10, len(dupes))])
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the sink has %d of %d records", len(seen), verified.Records)
		}
	}
	failuresMu.Lock()
	defer failuresMu.Unlock()
	if failed.Load() > 0 {
		t.Fatalf("%d of %d requests to live replicas failed: %v", failed.Load(), requests.Load(), failures[:min(5, len(failures))])
	}
	if requests.Load() < 100 {
		t.Fatalf("only %d requests made: the load did not run", requests.Load())
	}
	leaderName := regexp.MustCompile(`/\d+/`).FindString(next)
	t.Logf("%d requests, %d cut by the kill; %d of %d rotated at the kill; replica %s led %s after it", requests.Load(),
		killedDuringCalls.Load(), atKill, users, leaderName, tookOver.Round(time.Millisecond))
}

// dueUsers makes n users in moto (u000, u001…) with a key each, has Keyward adopt the keys into the
// PostgreSQL vault at dsn, then makes them 100 days old: all n are due under rotate_after 90d, and a
// key made today is not. It returns the database, opened beside Keyward, and each user's key.
func (w *motoWorld) dueUsers(t *testing.T, dsn string, n int) (*sql.DB, map[string]string) {
	return w.dueUsersIn(t, testenv.Database{Driver: "postgres", DSN: dsn}, n)
}

// dueUsersIn is dueUsers on either database.
func (w *motoWorld) dueUsersIn(t *testing.T, vault testenv.Database, n int) (*sql.DB, map[string]string) {
	t.Helper()
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("u%03d", i)
	}
	pre := w.addUsers(t, names...)
	w.env.must(t, 0, "", "rotate", "--once")
	driver := map[string]string{"postgres": "pgx", "sqlite": "sqlite"}[vault.Driver]
	db, err := sql.Open(driver, vault.DSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := db.Exec(`UPDATE credential_versions SET created_at = created_at - $1`, (100 * 24 * time.Hour).Microseconds()); err != nil {
		t.Fatal(err)
	}
	return db, pre
}

// sinkSeqs reads a JSON-lines audit sink: the seqs it holds, and those it holds more than once.
func sinkSeqs(t *testing.T, path string) (map[int64]bool, []int64) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	seen := map[int64]bool{}
	var dupes []int64
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		if line == "" {
			continue
		}
		var r struct{ Seq int64 }
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			continue // a line cut by the kill
		}
		if seen[r.Seq] {
			dupes = append(dupes, r.Seq)
		}
		seen[r.Seq] = true
	}
	slices.Sort(dupes)
	return seen, dupes
}

// loadTeam makes team payments for u007 and rotates u007 at once, so that Keyward holds the secret
// its readers get (an adopted key's it does not), and returns a member's API key for the team.
func (w *motoWorld) loadTeam(t *testing.T) string {
	t.Helper()
	w.env.must(t, 0, "", "team", "add", "payments", "--iam-user", "u007", "--account", "123456789012")
	w.env.must(t, 0, "", "rotate", "--once", "--user", "u007", "--force")
	var member struct{ Key string }
	if err := json.Unmarshal([]byte(w.env.must(t, 0, "", "apikey", "create", "--name", "load", "--role", "member", "--team", "payments",
		"-o", "json").stdout), &member); err != nil {
		t.Fatal(err)
	}
	return member.Key
}

// waitOutboxDrained waits up to 30 s for the outbox to hold no pending notice (the database may be
// coming back meanwhile).
func waitOutboxDrained(t *testing.T, db *sql.DB) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		var pending int
		err := db.QueryRow(`SELECT COUNT(*) FROM notification_outbox WHERE state = 'pending'`).Scan(&pending)
		if err == nil && pending == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("notices still pending after 30 s: %d (%v)", pending, err)
		}
	}
}

// rotated counts the rotations finished with a new key, or -1 while the database does not answer.
func rotated(db *sql.DB) int {
	var n int
	if err := db.QueryRow(`SELECT COUNT(*) FROM rotations WHERE outcome = 'rotated'`).Scan(&n); err != nil {
		return -1
	}
	return n
}

// hookLog records the webhooks Keyward sends, by delivery id.
type hookLog struct {
	mu       sync.Mutex
	received map[string][]time.Time // delivery id → when received
}

// newHookLog serves webhooks on loopback and returns their log and URL.
func newHookLog(t *testing.T) (*hookLog, string) {
	t.Helper()
	h := &hookLog{received: map[string][]time.Time{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		defer h.mu.Unlock()
		id := r.Header.Get("X-Keyward-Delivery")
		h.received[id] = append(h.received[id], time.Now())
	}))
	t.Cleanup(srv.Close)
	return h, srv.URL
}

// checkOnce asserts that want notices arrived, none twice unless first sent within [from, to] (in
// flight when a fault struck: delivery is at least once, receivers drop a delivery id they have).
func (h *hookLog) checkOnce(t *testing.T, want int, from, to time.Time) {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	var dupes []string
	for id, at := range h.received {
		if len(at) > 1 && (at[0].Before(from) || at[0].After(to)) {
			dupes = append(dupes, id)
		}
	}
	if len(h.received) != want || len(dupes) > 0 {
		t.Fatalf("%d notices received, want %d; delivered twice: %v", len(h.received), want, dupes)
	}
}

// checkRotatedOnce asserts that each of the users was rotated exactly once (one due date each), and
// holds one current key that works (checkAfterRecovery).
func (w *motoWorld) checkRotatedOnce(t *testing.T, db *sql.DB, pre map[string]string, users int) {
	t.Helper()
	var twice int
	if err := db.QueryRow(`SELECT COUNT(*) FROM (SELECT user_name FROM rotations WHERE outcome = 'rotated'
		GROUP BY user_name HAVING COUNT(*) > 1) AS t`).Scan(&twice); err != nil || twice > 0 {
		t.Fatalf("%d users were rotated more than once (%v)", twice, err)
	}
	if n := w.checkAfterRecovery(t, pre); n != users {
		t.Fatalf("%d users hold a rotated key, want %d", n, users)
	}
}
