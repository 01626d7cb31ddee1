// Package httpapi is Keyward's HTTP interface: the probes an orchestrator needs (GET /healthz, the
// process runs; GET /readyz, it can serve requests now), the rotation's own probe (GET
// /healthz/rotation, for monitoring, never for routing), GET /metrics, and the REST API under /v1. Every
// route declares the permission it needs where it is registered (see route); every error is an RFC
// 9457 problem document.
package httpapi

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"regexp"
	"strconv"
	"time"

	"github.com/keyward/keyward/internal/auth"
	"github.com/keyward/keyward/internal/metrics"
	"github.com/keyward/keyward/internal/secret"
)

// Check is one readiness condition: nil when met, otherwise an error. /readyz answers with the
// reason code only — a *NotReady's Reason, or else the check's Name — and the error's text goes to
// the log: it may name hosts, databases or the cloud's words, which are nobody's business outside.
type Check struct {
	Name string
	Func func(ctx context.Context) error
}

// NotReady is a failed check with its reason code (readiness: database, migrations, signing_key;
// the rotation's probe: scheduler_stalled, cloud_unavailable, notifications_stuck).
type NotReady struct {
	Reason string
	Err    error
}

func (n *NotReady) Error() string { return n.Reason + ": " + n.Err.Error() }
func (n *NotReady) Unwrap() error { return n.Err }

// Options configure the handler.
type Options struct {
	Log *slog.Logger
	// Checks are readiness: can this replica serve requests now (GET /readyz).
	Checks []Check
	// RotationChecks are the background work's health (GET /healthz/rotation): passes making
	// progress, the cloud listed, notices leaving. No orchestrator should route by them.
	RotationChecks []Check
	// Metrics, when set, are served at /metrics and told of every request.
	Metrics *metrics.Metrics
	// MetricsToken, when set, is the bearer token /metrics needs.
	MetricsToken secret.Value
	// MetricsElsewhere: /metrics is served on a listener of its own (MetricsHandler), not here.
	MetricsElsewhere bool
	// API, when set, serves the REST API under /v1 (probes and metrics only otherwise).
	API *API
	// UI, when set, serves the web pages under /ui/ (and / sends there), behind the same network
	// allowlist and per-address rate limit as the API.
	UI http.Handler
}

// MetricsHandler serves the metrics; with a token, only to requests that bear it (401 otherwise).
func MetricsHandler(m *metrics.Metrics, token secret.Value) http.Handler {
	h := m.Handler()
	if token.IsZero() {
		return h
	}
	want := []byte("Bearer " + token.Reveal())
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="keyward-metrics"`)
			problem(w, r, http.StatusUnauthorized, "unauthenticated", "/metrics needs its bearer token (server.metrics_token)")
			return
		}
		h.ServeHTTP(w, r)
	})
}

// Handler returns the HTTP handler: the probes, metrics, and the REST API when o.API is set.
func Handler(o Options) http.Handler {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return observe(o.Log, o.Metrics, newServer(o))
}

func newServer(o Options) *server {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	s := &server{log: o.Log, api: o.API}
	if s.api == nil {
		s.api = &API{}
	}
	s.api.init()
	s.route("GET /healthz", auth.Public, "Liveness: the process runs", func(w http.ResponseWriter, _ *http.Request, _ *auth.Principal) error {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
		return nil
	})
	s.route("GET /readyz", auth.Public, "Readiness: this replica can serve requests now (the database answers and is migrated, tokens can be signed)",
		probe(o.Log, o.Checks, "ready", "not ready"))
	s.route("GET /healthz/rotation", auth.Public, "The rotation's health, for monitoring (never for routing): the scheduler makes progress, the cloud is listed, notices leave",
		probe(o.Log, o.RotationChecks, "ok", "unhealthy"))
	if o.Metrics != nil && !o.MetricsElsewhere {
		h := MetricsHandler(o.Metrics, o.MetricsToken)
		s.route("GET /metrics", auth.Public, "Prometheus metrics (with server.metrics_token: that bearer token)", func(w http.ResponseWriter, r *http.Request, _ *auth.Principal) error {
			h.ServeHTTP(w, r)
			return nil
		})
	}
	if o.API != nil {
		s.apiRoutes()
	}
	if o.UI != nil {
		s.mux.Handle("/ui/", o.UI)
		s.mux.Handle("GET /{$}", http.RedirectHandler("/ui/", http.StatusSeeOther))
		s.mux.Handle("GET /favicon.ico", o.UI)
		s.mux.Handle("GET /robots.txt", o.UI)
	}
	return s
}

// probe answers 200 {"status": ok} when every check passes, otherwise 503 {"status": bad,
// "reasons": [...]} with reason codes only; the checks' words go to the log.
func probe(log *slog.Logger, checks []Check, ok, bad string) func(http.ResponseWriter, *http.Request, *auth.Principal) error {
	return func(w http.ResponseWriter, r *http.Request, _ *auth.Principal) error {
		ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
		defer cancel()
		reasons := []string{}
		for _, c := range checks {
			if err := c.Func(ctx); err != nil {
				reason := c.Name
				var nr *NotReady
				if errors.As(err, &nr) {
					reason = nr.Reason
				}
				reasons = append(reasons, reason)
				log.Warn(bad, "request_id", RequestID(r.Context()), "path", r.URL.Path, "check", c.Name, "reason", reason, "error", err.Error())
			}
		}
		if len(reasons) > 0 {
			writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": bad, "reasons": reasons})
			return nil
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": ok})
		return nil
	}
}

type requestIDKey struct{}

// RequestID returns the id of the request ctx belongs to ("" outside one).
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

var requestIDRe = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// quiet routes are polled by machines: they are logged at debug level only.
var quiet = map[string]bool{"GET /healthz": true, "GET /readyz": true, "GET /healthz/rotation": true, "GET /metrics": true}

// observe gives every request an id (the caller's X-Request-Id when it is sane, otherwise a new one),
// echoed in the response and carried in the context; then it logs the request and, with metrics,
// counts and times it by the route pattern it matched.
func observe(log *slog.Logger, m *metrics.Metrics, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := r.Header.Get("X-Request-Id")
		if !requestIDRe.MatchString(id) {
			b := make([]byte, 8)
			_, _ = rand.Read(b)
			id = hex.EncodeToString(b)
		}
		w.Header().Set("X-Request-Id", id)
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		r = r.WithContext(context.WithValue(r.Context(), requestIDKey{}, id))
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		var route string
		r = r.WithContext(context.WithValue(r.Context(), routeKey{}, &route))
		next.ServeHTTP(sw, r)
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
