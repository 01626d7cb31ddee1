package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/testenv"
)

// schedulerDoc is GET /v1/status's scheduler section, as far as these tests read it.
type schedulerDoc struct {
	State   string `json:"state"`
	Healthy bool   `json:"healthy"`
	Reason  string `json:"reason"`
	Pass    *struct {
		StartedAt time.Time `json:"started_at"`
		Done      int       `json:"done"`
		Known     int       `json:"known"`
	} `json:"pass"`
	LastPassFinishedAt *time.Time `json:"last_pass_finished_at"`
	LateSeconds        float64    `json:"late_seconds"`
}

// TestLongPassKeepsReplicasReady (issue 25 §1): a pass that takes far longer than three intervals —
// 24 due users at one at a time behind a slow cloud, rotation.interval 1s — leaves /readyz 200 on
// every poll, while /v1/status shows the pass running with its progress, /healthz/rotation is 200
// and the metrics' heartbeat moves. Then the cloud hangs: with no progress for stall_after, the
// scheduler is stalled in /healthz/rotation (503 scheduler_stalled), /v1/status and the metrics,
// and /readyz is still 200; once the cloud answers again the scheduler is healthy again. Both
// databases.
func TestLongPassKeepsReplicasReady(t *testing.T) {
	testenv.ForEachDatabase(t, func(t *testing.T, vault testenv.Database) {
		const users = 24
		w := newMotoWorld(t, "KEYWARD_VAULT_DRIVER="+vault.Driver, "KEYWARD_VAULT_DSN="+vault.DSN)
		w.dueUsersIn(t, vault, users)
		ops := apiKey(t, w.env, "ops", "operator")
		gate := testenv.NewGate(t, *w.admin.BaseEndpoint)
		gate.Latency.Store(int64(40 * time.Millisecond))
		p := startServe(t, w.env.with("KEYWARD_CLOUD=aws", "KEYWARD_AWS_ENDPOINT_URL="+gate.URL, "KEYWARD_ROTATION_INTERVAL=1s",
			"KEYWARD_ROTATION_CONCURRENCY=1", "KEYWARD_ROTATION_STALL_AFTER=3s", "KEYWARD_ROTATION_LEASE=3s"))
		base := "http://" + p.addr

		var notReady atomic.Int64
		var readyPolls atomic.Int64
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				case <-time.After(100 * time.Millisecond):
				}
				code, body := httpGetQuiet(base + "/readyz")
				readyPolls.Add(1)
				if code != http.StatusOK {
					notReady.Add(1)
					t.Errorf("/readyz = %d %s", code, body)
				}
			}
		})
		defer func() { close(stop); wg.Wait() }()

		status := func() schedulerDoc {
			t.Helper()
			code, body := httpGet(t, base+"/v1/status", "X-Api-Key", ops)
			var doc struct{ Scheduler schedulerDoc }
			if code != http.StatusOK || json.Unmarshal([]byte(body), &doc) != nil {
				t.Fatalf("/v1/status = %d %s", code, body)
			}
			return doc.Scheduler
		}
		// The pass runs longer than three intervals and is seen making progress all along.
		var long schedulerDoc
		for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			s := status()
			if s.Pass != nil && time.Since(s.Pass.StartedAt) > 4*time.Second && s.Pass.Done > 0 {
				long = s
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no pass ran longer than four intervals: %+v\n%s", s, p.logs.String())
			}
		}
		if long.State != "running" || !long.Healthy || long.Pass.Known < long.Pass.Done {
			t.Fatalf("a long pass making progress: %+v", long)
		}
		if code, body := httpGet(t, base+"/healthz/rotation"); code != http.StatusOK {
			t.Fatalf("/healthz/rotation during a long pass = %d %s", code, body)
		}
		m := metricsOf(t, base)
		if m["keyward_pass_in_progress"] != 1 || time.Since(time.Unix(int64(m["keyward_scheduler_progress_timestamp_seconds"]), 0)) > 3*time.Second ||
			m["keyward_pass_users_done"] < 1 {
			t.Fatalf("metrics during a long pass: %v", m)
		}

		// The cloud hangs: no user is visited any more.
		gate.Hold()
		var stalled schedulerDoc
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			if stalled = status(); stalled.State == "stalled" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the scheduler was not seen stalled with the cloud hanging (%d held): %+v", gate.Held.Load(), stalled)
			}
		}
		if stalled.Healthy || !strings.Contains(stalled.Reason, "stall_after 3s") {
			t.Fatalf("stalled: %+v", stalled)
		}
		if code, body := httpGet(t, base+"/healthz/rotation"); code != http.StatusServiceUnavailable || !strings.Contains(body, `"reasons":["scheduler_stalled"]`) {
			t.Fatalf("/healthz/rotation with the scheduler stalled = %d %s", code, body)
		}
		if code, body := httpGet(t, base+"/readyz"); code != http.StatusOK {
			t.Fatalf("/readyz with the scheduler stalled = %d %s (readiness is about serving requests)", code, body)
		}
		if m := metricsOf(t, base); time.Since(time.Unix(int64(m["keyward_scheduler_progress_timestamp_seconds"]), 0)) < 3*time.Second {
			t.Fatalf("the metrics' heartbeat moved while nothing progressed: %v", m)
		}
		gate.Open()
		for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			if s := status(); s.Healthy {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the scheduler did not recover once the cloud answered: %+v", status())
			}
		}
		if code, body := httpGet(t, base+"/healthz/rotation"); code != http.StatusOK {
			t.Fatalf("/healthz/rotation after recovery = %d %s", code, body)
		}
		// keyward status reads the same from the database.
		var st struct{ Scheduler schedulerDoc }
		if out := w.env.must(t, 0, "", "status", "-o", "json").stdout; json.Unmarshal([]byte(out), &st) != nil ||
			!st.Scheduler.Healthy || (st.Scheduler.State != "running" && st.Scheduler.State != "waiting") {
			t.Fatalf("keyward status's scheduler: %+v", st.Scheduler)
		}
		if readyPolls.Load() < 20 || notReady.Load() > 0 {
			t.Fatalf("%d of %d readiness polls failed", notReady.Load(), readyPolls.Load())
		}
	})
}

// apiKey makes an API key of role for the tests and returns it.
func apiKey(t *testing.T, e *env, name, role string) string {
	t.Helper()
	var k struct{ Key string }
	if err := json.Unmarshal([]byte(e.must(t, 0, "", "apikey", "create", "--name", name, "--role", role, "-o", "json").stdout), &k); err != nil || k.Key == "" {
		t.Fatalf("apikey create: %v", err)
	}
	return k.Key
}

// httpGetQuiet is httpGet for goroutines: errors are a status of 0.
func httpGetQuiet(url string) (int, string) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	var b strings.Builder
	_, _ = fmt.Fprint(&b, resp.Status)
	return resp.StatusCode, b.String()
}

var sampleRe = regexp.MustCompile(`(?m)^(keyward_[a-z_]+)(?:\{[^}]*\})? ([0-9.e+-]+)$`)

// metricsOf reads the unlabelled (or first labelled) sample of each keyward_ metric.
func metricsOf(t *testing.T, base string) map[string]float64 {
	t.Helper()
	code, body := httpGet(t, base+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics = %d", code)
	}
	m := map[string]float64{}
	for _, s := range sampleRe.FindAllStringSubmatch(body, -1) {
		if _, seen := m[s[1]]; !seen {
			m[s[1]], _ = strconv.ParseFloat(s[2], 64)
		}
	}
	return m
}
