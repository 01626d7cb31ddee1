package web

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/http"
	"time"

	"github.com/keyward/keyward/internal/auth"
)

// Session is one signed-in browser: the grant its login gave, and its times. The cookie holds a
// random id; the store holds only its SHA-256.
type Session struct {
	IDHash    string
	Grant     auth.Grant
	CreatedAt time.Time
	SeenAt    time.Time
	ExpiresAt time.Time
}

// SessionStore keeps sessions.
type SessionStore interface {
	CreateSession(ctx context.Context, s Session) error
	// Session returns a session by the hash of its id. Errors: ErrNoSession.
	Session(ctx context.Context, idHash string) (Session, error)
	TouchSession(ctx context.Context, idHash string, at time.Time) error
	// DeleteSession deletes a session (and any that expired before now).
	DeleteSession(ctx context.Context, idHash string, now time.Time) error
}

// ErrNoSession: no such session.
var ErrNoSession = errors.New("no such session")

func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func hashID(id string) string {
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:])
}

// csrfToken is the session's anti-forgery token: derived from its secret id, so a page that cannot
// read the cookie (another site) cannot know it.
func csrfToken(sessionID string) string {
	sum := sha256.Sum256([]byte("keyward-csrf|" + sessionID))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

func sameToken(a, b string) bool {
	return a != "" && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// cookieName is the session cookie's name: __Host- prefixed over TLS (the browser then insists on
// Secure, Path=/ and no Domain); plain on loopback HTTP, where a __Host- cookie cannot be set.
func (u *UI) cookieName(base string) string {
	if u.Secure {
		return "__Host-" + base
	}
	return base
}

func (u *UI) setCookie(w http.ResponseWriter, base, value string, maxAge time.Duration) {
	http.SetCookie(w, &http.Cookie{Name: u.cookieName(base), Value: value, Path: "/", HttpOnly: true, Secure: u.Secure,
		SameSite: http.SameSiteStrictMode, MaxAge: int(maxAge / time.Second)})
}

func (u *UI) clearCookie(w http.ResponseWriter, base string) {
	http.SetCookie(w, &http.Cookie{Name: u.cookieName(base), Value: "", Path: "/", HttpOnly: true, Secure: u.Secure,
		SameSite: http.SameSiteStrictMode, MaxAge: -1})
}

// startSession makes a session for a grant and sets its cookie.
func (u *UI) startSession(w http.ResponseWriter, r *http.Request, g auth.Grant) error {
	id := randomToken()
	now := u.now()
	if err := u.Sessions.CreateSession(r.Context(), Session{IDHash: hashID(id), Grant: g, CreatedAt: now, SeenAt: now, ExpiresAt: now.Add(u.TTL)}); err != nil {
		return err
	}
	u.setCookie(w, sessionCookie, id, u.TTL)
	return nil
}

// signedIn is a request's session and principal, if it has a live one.
type signedIn struct {
	id        string
	session   Session
	principal *auth.Principal
}

// current reads the request's session: it must exist, be within its lifetime and its idle timeout,
// and its grant must still hold (logout and disabling end it at once).
func (u *UI) current(r *http.Request) (*signedIn, error) {
	c, err := r.Cookie(u.cookieName(sessionCookie))
	if err != nil || c.Value == "" {
		return nil, ErrNoSession
	}
	s, err := u.Sessions.Session(r.Context(), hashID(c.Value))
	if err != nil {
		return nil, err
	}
	now := u.now()
	if !now.Before(s.ExpiresAt) || now.Sub(s.SeenAt) >= u.Idle {
		_ = u.Sessions.DeleteSession(r.Context(), s.IDHash, now)
		return nil, ErrNoSession
	}
	p, err := u.Auth.Principal(r.Context(), s.Grant)
	if err != nil {
		_ = u.Sessions.DeleteSession(r.Context(), s.IDHash, now)
		return nil, ErrNoSession
	}
	p.Via = "web"
	if now.Sub(s.SeenAt) > time.Minute { // the idle clock, written at most once a minute
		_ = u.Sessions.TouchSession(r.Context(), s.IDHash, now)
	}
	return &signedIn{id: c.Value, session: s, principal: p}, nil
}
