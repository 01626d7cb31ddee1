// Package httpapi is Keyward's HTTP interface. So far it serves the probes an orchestrator needs:
// GET /healthz (the process runs) and GET /readyz (the process can do its work), and GET /metrics.
package httpapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"net/http"
	"regexp"
	"strconv"
	"time"

	"github.com/keyward/keyward/internal/metrics"
)

// Check is one readiness condition: nil when met, otherwise an error that says what is wrong and
// holds no secret (it is shown to whoever asks /readyz).
type Check struct {
	Name string
	Func func(ctx context.Context) error
}

// Options configure the handler.
type Options struct {
	Log    *slog.Logger
	Checks []Check
	// Metrics, when set, are served at /metrics and told of every request.
	Metrics *metrics.Metrics
}

// Handler returns the HTTP handler: probes and metrics now, the REST API as it lands.
func Handler(o Options) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
		defer cancel()
		failed := map[string]string{}
		for _, c := range o.Checks {
			if err := c.Func(ctx); err != nil {
				failed[c.Name] = err.Error()
			}
		}
		if len(failed) > 0 {
			o.Log.Warn("not ready", "failed", failed)
			writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "not ready", "failed": failed})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})
	if o.Metrics != nil {
		mux.Handle("GET /metrics", o.Metrics.Handler())
	}
	return observe(o.Log, o.Metrics, mux)
}

type requestIDKey struct{}

// RequestID returns the id of the request ctx belongs to ("" outside one).
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

var requestIDRe = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// quiet routes are polled by machines: they are logged at debug level only.
var quiet = map[string]bool{"GET /healthz": true, "GET /readyz": true, "GET /metrics": true}

// observe gives every request an id (the caller's X-Request-Id when it is sane, otherwise a new one),
// echoed in the response and carried in the context; then it logs the request and, with metrics,
// counts and times it by the route pattern it matched.
func observe(log *slog.Logger, m *metrics.Metrics, next *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := r.Header.Get("X-Request-Id")
		if !requestIDRe.MatchString(id) {
			b := make([]byte, 8)
			_, _ = rand.Read(b)
			id = hex.EncodeToString(b)
		}
		w.Header().Set("X-Request-Id", id)
		r = r.WithContext(context.WithValue(r.Context(), requestIDKey{}, id))
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(sw, r)
		route := r.Pattern // set by the mux on this request
		if route == "" {
			route = "unmatched"
		}
		took := time.Since(start)
		level := slog.LevelInfo
		if quiet[route] && sw.status < 400 {
			level = slog.LevelDebug
		}
		log.Log(r.Context(), level, "http request", "request_id", id, "method", r.Method, "path", r.URL.Path,
			"route", route, "status", sw.status, "duration", took.String())
		if m != nil {
			m.HTTPRequests.WithLabelValues(r.Method, route, strconv.Itoa(sw.status)).Inc()
			m.HTTPDuration.WithLabelValues(route).Observe(took.Seconds())
		}
	})
}

// statusWriter remembers the status code written.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
