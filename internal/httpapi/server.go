package httpapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/time/rate"

	"github.com/keyward/keyward/internal/access"
	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/auth"
	"github.com/keyward/keyward/internal/store"
)

// handlerFunc serves a request for a principal (nil on public routes). An error it returns is
// written as a problem document by its class (see fail).
type handlerFunc func(w http.ResponseWriter, r *http.Request, p *auth.Principal) error

// Route is a registered route and the permission it needs.
type Route struct {
	Pattern string // "GET /v1/me"
	Perm    auth.Permission
	Summary string
}

// server dispatches requests: network rules, then the route's authentication and authorization.
type server struct {
	log    *slog.Logger
	api    *API
	mux    *http.ServeMux
	routes []Route
}

// route registers a handler with the permission it needs. There is no default: a route that names
// none does not start.
func (s *server) route(pattern string, perm auth.Permission, summary string, h handlerFunc) {
	if perm == "" {
		panic("httpapi: route " + pattern + " declares no permission")
	}
	if s.mux == nil {
		s.mux = http.NewServeMux()
	}
	s.routes = append(s.routes, Route{Pattern: pattern, Perm: perm, Summary: summary})
	s.mux.Handle(pattern, s.guard(pattern, perm, h))
}

// Routes lists the routes a handler made with o serves, with their permissions.
func Routes(o Options) []Route { return slices.Clone(newServer(o).routes) }

type routeKey struct{}

type principalKey struct{}

// ServeHTTP applies the network rules that hold for every request — the source allowlist and the
// per-address rate limit — and dispatches. The mux's own 404 and 405 become problem documents.
func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ip := s.api.clientIP(r)
	ctx := context.WithValue(r.Context(), clientIPKey{}, ip)
	r = r.WithContext(audit.WithOrigin(ctx, ip.String(), RequestID(ctx)))
	if len(s.api.AllowedCIDRs) > 0 && !contains(s.api.AllowedCIDRs, ip) {
		problem(w, r, http.StatusForbidden, "forbidden-network", "requests from "+ip.String()+" are not allowed (auth.allowed_cidrs)")
		return
	}
	if ok, wait := s.api.ipLimits.allow(ip.String()); !ok {
		tooMany(w, r, wait, "too many requests from "+ip.String())
		return
	}
	if h, pattern := s.mux.Handler(r); pattern == "" {
		c := &capture{header: http.Header{}}
		h.ServeHTTP(c, r)
		if allow := c.header.Get("Allow"); allow != "" {
			w.Header().Set("Allow", allow)
		}
		status := c.status
		if status == 0 || status == http.StatusOK {
			status = http.StatusNotFound
		}
		problem(w, r, status, "", fmt.Sprintf("%s %s: %s", r.Method, r.URL.Path, strings.ToLower(http.StatusText(status))))
		return
	}
	s.mux.ServeHTTP(w, r)
}

// capture records what the mux's fallback handlers write, to say it as a problem document instead.
type capture struct {
	header http.Header
	status int
}

func (c *capture) Header() http.Header         { return c.header }
func (c *capture) Write(b []byte) (int, error) { return len(b), nil }
func (c *capture) WriteHeader(code int)        { c.status = code }

// guard authenticates and authorizes a request for a route, then runs its handler.
func (s *server) guard(pattern string, perm auth.Permission, h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rp, ok := r.Context().Value(routeKey{}).(*string); ok {
			*rp = pattern
		}
		var p *auth.Principal
		if perm != auth.Public {
			var err error
			if p, err = s.api.authenticate(r); err != nil {
				s.fail(w, r, err)
				return
			}
			ip := clientIPOf(r)
			if len(p.CIDRs) > 0 && !contains(p.CIDRs, ip) {
				s.api.denials.record(r, p, pattern, "network")
				problem(w, r, http.StatusForbidden, "forbidden-network", fmt.Sprintf("API key %s may not be used from %s", p.Name, ip))
				return
			}
			if ok, wait := s.api.principalLimits.allow(p.ID()); !ok {
				tooMany(w, r, wait, "too many requests from "+p.ID())
				return
			}
			if err := p.Authorize(perm, r.PathValue("team")); err != nil {
				reason := "forbidden"
				if errors.Is(err, auth.ErrMFARequired) {
					reason = "mfa_required"
				}
				s.api.denials.record(r, p, pattern, reason)
				s.fail(w, r, err)
				return
			}
			r = r.WithContext(context.WithValue(r.Context(), principalKey{}, p))
		}
		if err := h(w, r, p); err != nil {
			s.fail(w, r, err)
		}
	})
}

// fail writes err as a problem document. Auth's errors and bad requests are Keyward's own words,
// safe to show. A domain error with a public message (access.Error) shows that message only: its
// cause — the cloud's or the database's text — goes to the log under the request's id. Anything
// else is logged and shown as an internal error.
func (s *server) fail(w http.ResponseWriter, r *http.Request, err error) {
	var locked *auth.LockedError
	var busy *auth.BusyError
	var bad *badRequest
	var pub interface{ PublicMessage() string }
	detail := func() string {
		if errors.As(err, &pub) {
			return pub.PublicMessage()
		}
		return err.Error()
	}
	if errors.As(err, &pub) && err.Error() != pub.PublicMessage() { // it has a cause
		s.log.Warn("request refused", "request_id", RequestID(r.Context()), "route", r.Pattern, "error", err.Error())
	}
	switch {
	case store.Unavailable(err):
		s.log.Warn("database unavailable", "request_id", RequestID(r.Context()), "route", r.Pattern, "error", err.Error())
		w.Header().Set("Retry-After", "5")
		problem(w, r, http.StatusServiceUnavailable, "unavailable", "the database is unavailable or too slow: try again shortly")
	case errors.As(err, &bad):
		problem(w, r, http.StatusBadRequest, "bad-request", bad.Error())
	case errors.Is(err, access.ErrBadRequest):
		problem(w, r, http.StatusBadRequest, "bad-request", detail())
	case errors.As(err, &locked):
		tooMany(w, r, locked.RetryAfter, "too many failed attempts")
	case errors.As(err, &busy):
		tooMany(w, r, busy.RetryAfter, "too many logins at once: try again shortly")
	case errors.Is(err, auth.ErrUnauthenticated):
		// The caller is told nothing of why; the log says, for whoever runs Keyward.
		s.log.Info("authentication failed", "request_id", RequestID(r.Context()), "reason", err.Error())
		w.Header().Set("WWW-Authenticate", `Bearer realm="keyward"`)
		problem(w, r, http.StatusUnauthorized, "unauthenticated", "a valid token (Authorization: Bearer) or API key (X-API-Key) is required")
	case errors.Is(err, auth.ErrMFARequired):
		problem(w, r, http.StatusForbidden, "mfa-required", "this needs a login with a second factor (keyward user mfa enroll, then log in with the code)")
	case errors.Is(err, auth.ErrForbidden):
		problem(w, r, http.StatusForbidden, "forbidden", "your role or teams do not allow this")
	case errors.Is(err, access.ErrSessionOnly):
		problem(w, r, http.StatusForbidden, "session-only", detail())
	case errors.Is(err, auth.ErrInvalid):
		problem(w, r, http.StatusBadRequest, "bad-request", err.Error())
	case errors.Is(err, auth.ErrNotFound), errors.Is(err, access.ErrNoSuchTeam), errors.Is(err, access.ErrNotFound):
		problem(w, r, http.StatusNotFound, "not-found", detail())
	case errors.Is(err, auth.ErrExists), errors.Is(err, auth.ErrLastAdmin):
		problem(w, r, http.StatusConflict, "conflict", err.Error())
	case errors.Is(err, access.ErrUnavailable):
		problem(w, r, http.StatusConflict, "unavailable", detail())
	case errors.Is(err, access.ErrCloudUnavailable), errors.Is(err, access.ErrBusy):
		w.Header().Set("Retry-After", "30")
		problem(w, r, http.StatusServiceUnavailable, "unavailable", detail())
	case errors.Is(err, context.Canceled):
		problem(w, r, 499, "", "request cancelled")
	default:
		s.log.Error("request failed", "request_id", RequestID(r.Context()), "route", r.Pattern, "error", err.Error())
		problem(w, r, http.StatusInternalServerError, "", "internal error; the log has its request id")
	}
}

// badRequest is a request that is wrong: its message names the field or value at fault.
type badRequest struct{ msg string }

func (b *badRequest) Error() string { return b.msg }

func badf(format string, args ...any) error { return &badRequest{msg: fmt.Sprintf(format, args...)} }

// problem writes an RFC 9457 problem document.
func problem(w http.ResponseWriter, r *http.Request, status int, kind, detail string) {
	typ := "about:blank"
	if kind != "" {
		typ = "https://keyward.dev/problems/" + kind
	}
	title := http.StatusText(status)
	if title == "" {
		title = "Client Closed Request"
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = jsonEncode(w, map[string]any{"type": typ, "title": title, "status": status, "detail": detail,
		"instance": r.URL.Path, "request_id": RequestID(r.Context())})
}

func tooMany(w http.ResponseWriter, r *http.Request, wait time.Duration, detail string) {
	w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(max(wait, time.Second).Seconds()))))
	problem(w, r, http.StatusTooManyRequests, "rate-limited", detail)
}

func contains(prefixes []netip.Prefix, ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, p := range prefixes {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

type clientIPKey struct{}

// clientIPOf returns the client address ServeHTTP found.
func clientIPOf(r *http.Request) netip.Addr {
	ip, _ := r.Context().Value(clientIPKey{}).(netip.Addr)
	return ip
}

// clientIP is the request's source address; behind a trusted proxy, the last address in
// X-Forwarded-For that is not itself a trusted proxy. The header is ignored from anyone else.
func (a *API) clientIP(r *http.Request) netip.Addr {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	ip, _ := netip.ParseAddr(host)
	ip = ip.Unmap()
	if contains(a.TrustedProxies, ip) {
		hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
		for i := len(hops) - 1; i >= 0; i-- {
			hop, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
			if err != nil {
				break // a malformed hop: trust nothing further left
			}
			ip = hop.Unmap()
			if !contains(a.TrustedProxies, ip) {
				break
			}
		}
	}
	return ip
}

// limiter keeps a token bucket per key (an address, a principal): rps per second, bursts of twice
// that. The buckets are a bounded LRU: at most maxTracked keys (the least recently seen go first),
// and a bucket unused for idleAfter starts afresh. Memory stays bounded whatever the number of
// addresses a flood comes from.
type limiter struct {
	rps     float64
	buckets *lru.Cache[string, *bucket]
}

type bucket struct {
	l    *rate.Limiter
	seen atomic.Int64 // unix nanoseconds of the last use
}

const (
	maxTracked = 100_000
	idleAfter  = 10 * time.Minute
)

func newLimiter(rps float64) *limiter {
	c, _ := lru.New[string, *bucket](maxTracked) // errs only for a size ≤ 0
	return &limiter{rps: rps, buckets: c}
}

// allow takes a token for key; when there is none it says how long until there is.
func (l *limiter) allow(key string) (bool, time.Duration) {
	if l == nil || l.rps <= 0 {
		return true, 0
	}
	now := time.Now()
	b, ok := l.buckets.Get(key)
	if !ok || now.Sub(time.Unix(0, b.seen.Load())) > idleAfter {
		fresh := &bucket{l: rate.NewLimiter(rate.Limit(l.rps), int(math.Max(1, 2*l.rps)))}
		if ok { // idle: start afresh
			l.buckets.Add(key, fresh)
			b = fresh
		} else if prev, found, _ := l.buckets.PeekOrAdd(key, fresh); found { // another request made one first
			b = prev
		} else {
			b = fresh
		}
	}
	b.seen.Store(now.UnixNano())
	res := b.l.ReserveN(now, 1)
	if d := res.DelayFrom(now); d > 0 {
		res.CancelAt(now)
		return false, d
	}
	return true, 0
}
