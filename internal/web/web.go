// Package web is Keyward's web interface: server-rendered pages (html/template, embedded in the
// binary) under /ui/, a client of the same services as the REST API. Every page names the
// permission it needs where it is registered, as the API's routes do; reads of secrets go through
// internal/access, which records them before it hands them over. Sessions are cookies (HttpOnly,
// SameSite=Strict, __Host- and Secure over TLS) naming a server-side session bound to the login's
// grant, so logout and disabling end them at once; every form that changes something carries an
// anti-forgery token; pages are sent with a Content-Security-Policy that allows no inline script.
package web

import (
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/keyward/keyward/internal/access"
	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/auth"
	"github.com/keyward/keyward/internal/report"
	"github.com/keyward/keyward/internal/secret"
	"github.com/keyward/keyward/internal/store/dbfault"
	"github.com/keyward/keyward/internal/vault"
)

//go:embed templates/*.html static/*
var files embed.FS

const (
	sessionCookie = "keyward_session"
	loginCookie   = "keyward_login" // the login form's anti-forgery token, before there is a session
)

// UI serves the pages.
type UI struct {
	Auth     *auth.Service
	Access   *access.Service
	Sessions SessionStore
	// Trail and Vault serve the audit page (the trail, and the keys that signed its checkpoints).
	Trail *audit.Trail
	Vault *vault.Vault
	// Reports, when set, serves the compliance report page (absent until the inventory was read).
	Reports *report.Service
	// SSO, when set, offers "Sign in with SSO" (the OpenID Connect flow the API has, returning to
	// /ui/sso/callback, which the provider must allow as a redirect address).
	SSO SSO
	Log *slog.Logger
	// Secure: served over TLS (cookies are __Host- prefixed and Secure).
	Secure bool
	// TTL is a session's lifetime; Idle ends it sooner without requests.
	TTL, Idle time.Duration
	// ServerURL is what the credential_process line names (default: the request's own origin).
	ServerURL string
	Now       func() time.Time

	pages      map[string]*template.Template
	mux        *http.ServeMux
	registered []Page
}

// Page is one registered page: its pattern and the permission it needs.
type Page struct {
	Pattern string
	Perm    auth.Permission
}

// Pages lists the registered pages (for tests that hold the table to the API's).
func (u *UI) Pages() []Page { return u.registered }

func (u *UI) now() time.Time {
	if u.Now == nil {
		return time.Now().UTC()
	}
	return u.Now().UTC()
}

// Handler returns the UI's handler, for /ui/.
func (u *UI) Handler() http.Handler {
	if u.Log == nil {
		u.Log = slog.New(slog.DiscardHandler)
	}
	if u.TTL == 0 {
		u.TTL = 8 * time.Hour
	}
	if u.Idle == 0 {
		u.Idle = time.Hour
	}
	u.pages = parsePages()
	u.mux = http.NewServeMux()
	static, _ := fs.Sub(files, "static")
	u.mux.Handle("GET /ui/static/", http.StripPrefix("/ui/static/", http.FileServerFS(static)))
	u.mux.HandleFunc("GET /favicon.ico", serveFavicon)
	u.mux.HandleFunc("GET /robots.txt", serveRobots)
	u.page("GET /ui/login", auth.Public, u.loginPage)
	u.page("POST /ui/login", auth.Public, u.login)
	u.page("POST /ui/logout", auth.Authenticated, u.logout)
	u.page("GET /ui/sso", auth.Public, u.ssoStart)
	u.page("GET /ui/sso/callback", auth.Public, u.ssoCallback)
	u.page("GET /ui/{$}", auth.Authenticated, u.myKeys)
	u.page("POST /ui/teams/{team}/reveal", auth.ReadCredentials, u.reveal)
	u.page("GET /ui/inventory", auth.ReadInventory, u.inventoryPage)
	u.page("GET /ui/identities/{account}/{user}", auth.ReadInventory, u.historyPage)
	u.page("POST /ui/identities/{account}/{user}/rotate", auth.Rotate, u.rotateIdentityNow)
	u.page("POST /ui/teams/{team}/rotate", auth.Rotate, u.rotateNow)
	u.page("GET /ui/rotations/{id}", auth.Rotate, u.rotationPage)
	u.page("GET /ui/mfa", auth.Authenticated, u.mfaPage)
	u.page("POST /ui/mfa", auth.Authenticated, u.mfaEnroll)
	u.page("GET /ui/audit", auth.ReadAudit, u.auditPage)
	u.page("GET /ui/audit/verify", auth.ReadAudit, u.auditVerify)
	u.page("GET /ui/audit/export", auth.ReadAudit, u.auditExport)
	u.page("GET /ui/reports", auth.ReadReports, u.reportsPage)
	u.page("GET /ui/reports/compliance.html", auth.ReadReports, u.reportDownload)
	u.page("GET /ui/admin", auth.Administer, u.adminPage)
	u.page("POST /ui/admin/{action}", auth.Administer, u.adminAction)
	u.mux.HandleFunc("/ui/", func(w http.ResponseWriter, r *http.Request) {
		u.render(w, r, http.StatusNotFound, "error", nil, map[string]any{"Title": "Not found", "Message": "There is no page " + r.URL.Path + "."})
	})
	return u.mux
}

// pageFunc is a page's handler: the principal is nil on public pages.
type pageFunc func(w http.ResponseWriter, r *http.Request, s *signedIn) error

// page registers a page with the permission it needs. A public page gets the session if there is
// one; any other needs one (else to the login page) and the permission (else 403).
func (u *UI) page(pattern string, perm auth.Permission, h pageFunc) {
	u.registered = append(u.registered, Page{Pattern: pattern, Perm: perm})
	u.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		s, err := u.current(r)
		if err != nil && !errors.Is(err, ErrNoSession) {
			u.fail(w, r, nil, err)
			return
		}
		if perm != auth.Public {
			if s == nil {
				if r.Method == http.MethodGet {
					http.Redirect(w, r, "/ui/login?next="+urlPathOnly(r), http.StatusSeeOther)
				} else {
					u.render(w, r, http.StatusUnauthorized, "error", nil, map[string]any{"Title": "Signed out", "Message": "Your session has ended: sign in again."})
				}
				return
			}
			// A team's key is checked by internal/access, team by team; the rest here, as the API does
			// (with the second factor where auth.require_mfa asks for it).
			if perm != auth.ReadCredentials {
				if err := s.principal.Authorize(perm, ""); err != nil {
					u.fail(w, r, s, err)
					return
				}
			}
		}
		if r.Method == http.MethodPost && !u.formTokenOK(r, s) {
			u.render(w, r, http.StatusForbidden, "error", s, map[string]any{"Title": "Refused",
				"Message": "This form did not come from a Keyward page (its anti-forgery token is missing or wrong). Reload the page and try again."})
			return
		}
		if err := h(w, r, s); err != nil {
			u.fail(w, r, s, err)
		}
	})
}

// urlPathOnly is the request's path, for a return after signing in (never another site).
func urlPathOnly(r *http.Request) string {
	if strings.HasPrefix(r.URL.Path, "/ui/") {
		return r.URL.Path
	}
	return "/ui/"
}

// formTokenOK checks a form's anti-forgery token: the session's, or before a session the login
// cookie's (double submit).
func (u *UI) formTokenOK(r *http.Request, s *signedIn) bool {
	got := r.PostFormValue("csrf")
	if s != nil {
		return sameToken(got, csrfToken(s.id))
	}
	c, err := r.Cookie(u.cookieName(loginCookie))
	return err == nil && sameToken(got, c.Value)
}

// fail renders an error page: 403 for what the principal may not do, the domain's public message
// for what cannot be done now, and a request id for anything else (the cause goes to the log).
func (u *UI) fail(w http.ResponseWriter, r *http.Request, s *signedIn, err error) {
	var pub interface{ PublicMessage() string }
	switch {
	case dbfault.Unavailable(err):
		u.Log.Warn("database unavailable", "path", r.URL.Path, "error", err.Error())
		w.Header().Set("Retry-After", "5")
		u.render(w, r, http.StatusServiceUnavailable, "error", s, map[string]any{"Title": "Try again shortly",
			"Message": "The database is unavailable or too slow. Nothing was done: try again in a moment."})
	case errors.Is(err, auth.ErrMFARequired):
		u.render(w, r, http.StatusForbidden, "error", s, map[string]any{"Title": "Second factor needed",
			"Message": "Reading a secret needs a sign-in with your authenticator code: sign out, then sign in with the code."})
	case errors.Is(err, auth.ErrForbidden), errors.Is(err, access.ErrSessionOnly) && !errors.As(err, &pub):
		u.render(w, r, http.StatusForbidden, "error", s, map[string]any{"Title": "Not allowed", "Message": "Your role or teams do not allow this."})
	case errors.As(err, &pub):
		status := http.StatusConflict
		if errors.Is(err, access.ErrNoSuchTeam) || errors.Is(err, access.ErrNotFound) {
			status = http.StatusNotFound
		} else if errors.Is(err, access.ErrSessionOnly) {
			status = http.StatusForbidden
		}
		u.Log.Warn("page refused", "path", r.URL.Path, "error", err.Error())
		u.render(w, r, status, "error", s, map[string]any{"Title": "Not now", "Message": pub.PublicMessage()})
	case errors.Is(err, access.ErrNoSuchTeam):
		u.render(w, r, http.StatusForbidden, "error", s, map[string]any{"Title": "Not allowed", "Message": "Your role or teams do not allow this."})
	default:
		u.Log.Error("page failed", "path", r.URL.Path, "error", err.Error())
		u.render(w, r, http.StatusInternalServerError, "error", s, map[string]any{"Title": "Something went wrong",
			"Message": "The page could not be made; the log has the details."})
	}
}

// render writes a page with the headers every page has: no caching (pages may show secrets), no
// framing, no referrer, and a policy that runs only Keyward's own script file.
func (u *UI) render(w http.ResponseWriter, r *http.Request, status int, name string, s *signedIn, data map[string]any) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "+
		"form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	if data == nil {
		data = map[string]any{}
	}
	if s != nil {
		data["Me"] = s.principal
		data["CSRF"] = csrfToken(s.id)
		// The menu shows what the principal may open, and the reports page only once there is one.
		data["Can"] = map[string]bool{"audit": s.principal.Role.Can(auth.ReadAudit), "admin": s.principal.Role.Can(auth.Administer),
			"inventory": s.principal.Role.Can(auth.ReadInventory) && u.Reports != nil, "rotate": s.principal.Role.Can(auth.Rotate),
			"reports": s.principal.Role.Can(auth.ReadReports) && u.reportsExist(r)}
	}
	t := u.pages[name]
	var buf strings.Builder
	if err := t.ExecuteTemplate(&buf, "layout", data); err != nil {
		u.Log.Error("template failed", "page", name, "error", err.Error())
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.WriteHeader(status)
	_, _ = w.Write([]byte(buf.String()))
}

// age says how long d is in the largest whole unit that fits, in words ("1 minute", "3 days").
func age(d time.Duration) string {
	plural := func(n int, unit string) string {
		if n == 1 {
			return "1 " + unit
		}
		return fmt.Sprintf("%d %ss", n, unit)
	}
	switch {
	case d >= 48*time.Hour:
		return plural(int(d/(24*time.Hour)), "day")
	case d >= time.Hour:
		return plural(int(d/time.Hour), "hour")
	case d >= time.Minute:
		return plural(int(d/time.Minute), "minute")
	}
	return "under a minute"
}

// parsePages parses each page with the layout.
func parsePages() map[string]*template.Template {
	funcs := template.FuncMap{
		"ago": func(t time.Time) string {
			if t.IsZero() {
				return "—"
			}
			return age(time.Since(t))
		},
		"date": func(t time.Time) template.HTML {
			return template.HTML(`<time datetime="` + t.UTC().Format(time.RFC3339) + `">` + t.UTC().Format("2006-01-02 15:04 UTC") + `</time>`)
		},
		"past":   func(t time.Time) bool { return !t.IsZero() && t.Before(time.Now()) },
		"since":  func(d time.Duration) time.Time { return time.Now().Add(-d) },
		"reveal": func(v secret.Value) string { return v.Reveal() },
		"qr":     qrSVG,
	}
	out := map[string]*template.Template{}
	for _, name := range []string{"login", "keys", "reveal", "error", "audit", "reports", "admin", "confirm", "created", "mfa", "inventory", "history", "rotation"} {
		out[name] = template.Must(template.New(name).Funcs(funcs).ParseFS(files, "templates/layout.html", "templates/"+name+".html"))
	}
	return out
}

// sourceIP is the request's source address, as the API's server put it in the context.
func sourceIP(r *http.Request) string {
	if ip := audit.SourceIP(r.Context()); ip != "" {
		return ip
	}
	host := r.RemoteAddr
	if i := strings.LastIndex(host, ":"); i > 0 {
		host = host[:i]
	}
	return strings.Trim(host, "[]")
}
