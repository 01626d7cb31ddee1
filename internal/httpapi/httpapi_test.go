package httpapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/keyward/keyward/internal/httpapi"
)

func TestProbes(t *testing.T) {
	var dbErr error
	h := httpapi.Handler(slog.New(slog.NewTextHandler(io.Discard, nil)), []httpapi.Check{
		{Name: "database", Func: func(context.Context) error { return dbErr }},
	})
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
	if code, _ := get("/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz while ready = %d", code)
	}
	dbErr = errors.New("database schema is not migrated")
	code, body := get("/readyz")
	if code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz while not ready = %d", code)
	}
	if failed, _ := body["failed"].(map[string]any); failed["database"] != "database schema is not migrated" {
		t.Fatalf("/readyz does not say what failed: %v", body)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/healthz", nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Fatalf("POST /healthz = %d, want 405", rec.Code)
	}
}
