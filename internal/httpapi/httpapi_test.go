package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/httpapi"
	"github.com/keyward/keyward/internal/metrics"
)

func TestProbes(t *testing.T) {
	var dbErr error
	m := metrics.New(metrics.Sources{
		KeyAges: func(context.Context) ([]metrics.KeyAge, error) {
			return []metrics.KeyAge{{Account: "123456789012", User: "alice", State: "current", Age: 90 * time.Second},
				{Account: "123456789012", User: "alice", State: "previous", Age: 9 * time.Second},
				{Account: "123456789012", User: "alice", State: "previous", Age: 99 * time.Second}}, nil
		},
		Throttles: func() float64 { return 3 },
	})
	m.Rotation("rotated", 2*time.Second)
	m.CloudCall("CreateAccessKey", "ok")
	var logs bytes.Buffer
	h := httpapi.Handler(httpapi.Options{Log: slog.New(slog.NewJSONHandler(&logs, nil)), Metrics: m, Checks: []httpapi.Check{
		{Name: "database", Func: func(context.Context) error { return dbErr }},
	}})
	get := func(path string) (int, map[string]any) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		var body map[string]any
		_ = json.Unmarshal(rec.Body.Bytes(), &body)
		return rec.Code, body
	}
	if code, _ := get("/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz = %d", code)
	}
	// Every response carries a request id: the caller's when sane, else a new one; logs carry it too.
	req := httptest.NewRequest(http.MethodGet, "/nowhere", nil)
	req.Header.Set("X-Request-Id", "abc-123")
	rec0 := httptest.NewRecorder()
	h.ServeHTTP(rec0, req)
	if rec0.Header().Get("X-Request-Id") != "abc-123" || !strings.Contains(logs.String(), `"request_id":"abc-123"`) {
		t.Fatalf("request id: header %q, logs %s", rec0.Header().Get("X-Request-Id"), logs.String())
	}
	req.Header.Set("X-Request-Id", "bad id\nwith newline")
	rec0 = httptest.NewRecorder()
	h.ServeHTTP(rec0, req)
	if id := rec0.Header().Get("X-Request-Id"); len(id) != 16 {
		t.Fatalf("an insane request id was kept: %q", id)
	}
	if code, _ := get("/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz while ready = %d", code)
	}
	// Not ready: the answer is a reason code, never the error's text (which goes to the log).
	dbErr = &httpapi.NotReady{Reason: "migrations", Err: errors.New("schema of db.internal.example:5432 at version 3, want 7")}
	code, body := get("/readyz")
	if code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz while not ready = %d", code)
	}
	if fmt.Sprint(body["reasons"]) != "[migrations]" || len(body) != 2 {
		t.Fatalf("/readyz does not say what failed by its code alone: %v", body)
	}
	if !strings.Contains(logs.String(), "db.internal.example") {
		t.Fatalf("the log does not say why: %s", logs.String())
	}
	dbErr = errors.New("connection refused by db.internal.example")
	if code, body := get("/readyz"); code != http.StatusServiceUnavailable || fmt.Sprint(body["reasons"]) != "[database]" {
		t.Fatalf("a check without a reason code answers by its name: %d %v", code, body)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/healthz", nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Fatalf("POST /healthz = %d, want 405", rec.Code)
	}

	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	text := rec.Body.String()
	for _, want := range []string{
		`keyward_access_key_age_seconds{account="123456789012",state="current",user="alice"} 90`,
		`keyward_access_key_age_seconds{account="123456789012",state="previous",user="alice"} 99`,
		`keyward_rotations_total{outcome="rotated"} 1`,
		`keyward_rotation_duration_seconds_count 1`,
		`keyward_cloud_api_calls_total{operation="CreateAccessKey",outcome="ok"} 1`,
		`keyward_cloud_throttles_total 3`,
		`keyward_http_requests_total{code="503",method="GET",route="GET /readyz"} 2`,
		`keyward_http_requests_total{code="405",method="POST",route="unmatched"} 1`,
		`keyward_http_request_duration_seconds_count{route="GET /healthz"} 1`,
		`keyward_outbox_pending 0`,
		`keyward_last_pass_timestamp_seconds 0`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}
