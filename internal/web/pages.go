package web

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"

	"github.com/keyward/keyward/internal/access"
	"github.com/keyward/keyward/internal/auth"
	"github.com/keyward/keyward/internal/secret"
)

// loginPage shows the sign-in form, with a fresh anti-forgery token in a cookie of its own.
func (u *UI) loginPage(w http.ResponseWriter, r *http.Request, s *signedIn) error {
	if s != nil {
		http.Redirect(w, r, "/ui/", http.StatusSeeOther)
		return nil
	}
	token := randomToken()
	u.setCookie(w, loginCookie, token, 0)
	u.render(w, r, http.StatusOK, "login", nil, map[string]any{"Title": "Sign in", "LoginCSRF": token, "Next": safeNext(r.URL.Query().Get("next")),
		"SSO": u.SSO != nil})
	return nil
}

// SSO is single sign-on through an OpenID Connect provider (httpapi.OIDC).
type SSO interface {
	Begin(ctx context.Context, svc *auth.Service, redirectURL string) (string, error)
	Finish(ctx context.Context, svc *auth.Service, redirectURL, state, code string) (auth.Token, error)
}

// ssoStart sends the browser to the provider.
func (u *UI) ssoStart(w http.ResponseWriter, r *http.Request, _ *signedIn) error {
	if u.SSO == nil {
		u.render(w, r, http.StatusNotFound, "error", nil, map[string]any{"Title": "Not found", "Message": "Single sign-on is not configured."})
		return nil
	}
	to, err := u.SSO.Begin(r.Context(), u.Auth, u.serverURL(r)+"/ui/sso/callback")
	if err != nil {
		return err
	}
	http.Redirect(w, r, to, http.StatusFound)
	return nil
}

// ssoCallback finishes the sign-in the provider sends back, and starts a session.
func (u *UI) ssoCallback(w http.ResponseWriter, r *http.Request, _ *signedIn) error {
	if u.SSO == nil {
		http.NotFound(w, r)
		return nil
	}
	q := r.URL.Query()
	again := func(msg string) error { return u.loginAgain(w, r, http.StatusUnauthorized, msg, "", "/ui/") }
	if q.Get("error") != "" || q.Get("state") == "" || q.Get("code") == "" {
		return again("Single sign-on did not finish: try again.")
	}
	tok, err := u.SSO.Finish(r.Context(), u.Auth, u.serverURL(r)+"/ui/sso/callback", q.Get("state"), q.Get("code"))
	switch {
	case errors.Is(err, auth.ErrForbidden):
		return again("None of your groups is given access to Keyward.")
	case errors.Is(err, auth.ErrUnauthenticated):
		u.Log.Info("single sign-on refused", "reason", err.Error())
		return again("Single sign-on did not succeed: try again.")
	case err != nil:
		return err
	}
	return u.enter(w, r, tok, "/ui/")
}

// safeNext keeps a return address on this site's pages.
func safeNext(next string) string {
	if strings.HasPrefix(next, "/ui/") && !strings.HasPrefix(next, "//") && !strings.Contains(next, "\\") {
		return next
	}
	return "/ui/"
}

// login checks the password and code as the API's login does (the same lockout and delays), then
// starts a session.
func (u *UI) login(w http.ResponseWriter, r *http.Request, _ *signedIn) error {
	name := strings.TrimSpace(r.PostFormValue("username"))
	tok, err := u.Auth.Login(r.Context(), name, secret.New(r.PostFormValue("password")), strings.TrimSpace(r.PostFormValue("code")), sourceIP(r))
	var locked *auth.LockedError
	var busy *auth.BusyError
	again := func(status int, msg string) error {
		return u.loginAgain(w, r, status, msg, name, safeNext(r.PostFormValue("next")))
	}
	switch {
	case errors.As(err, &locked):
		return again(http.StatusTooManyRequests, "Too many failed attempts: try again in "+locked.RetryAfter.Round(1e9).String()+".")
	case errors.As(err, &busy):
		return again(http.StatusTooManyRequests, "Too many sign-ins at once: try again in a moment.")
	case errors.Is(err, auth.ErrUnauthenticated):
		return again(http.StatusUnauthorized, "Wrong user name, password or code.")
	case err != nil:
		return err
	}
	return u.enter(w, r, tok, safeNext(r.PostFormValue("next")))
}

// loginAgain shows the sign-in form again, with what went wrong.
func (u *UI) loginAgain(w http.ResponseWriter, r *http.Request, status int, msg, username, next string) error {
	token := randomToken()
	u.setCookie(w, loginCookie, token, 0)
	u.render(w, r, status, "login", nil, map[string]any{"Title": "Sign in", "LoginCSRF": token, "Error": msg, "Username": username,
		"Next": next, "SSO": u.SSO != nil})
	return nil
}

// enter starts a session for a signed-in principal and sends the browser on (to enrol an
// authenticator first where its role needs a second factor and it has none).
func (u *UI) enter(w http.ResponseWriter, r *http.Request, tok auth.Token, next string) error {
	g, err := u.Auth.GrantOf(r.Context(), tok.Token)
	if err != nil {
		return err
	}
	if err := u.startSession(w, r, g); err != nil {
		return err
	}
	u.clearCookie(w, loginCookie)
	if p, err := u.Auth.Principal(r.Context(), g); err == nil && p.NeedsEnrolment() {
		next = "/ui/mfa" // a role that needs a second factor, and none yet: enrol first
	}
	http.Redirect(w, r, next, http.StatusSeeOther)
	return nil
}

// mfaPage offers a user without an authenticator to enrol one.
func (u *UI) mfaPage(w http.ResponseWriter, r *http.Request, s *signedIn) error {
	u.render(w, r, http.StatusOK, "mfa", s, map[string]any{"Title": "Authenticator", "Enrolled": s.principal.MFAEnrolled,
		"Needed": s.principal.NeedsEnrolment(), "SSO": s.principal.SSO()})
	return nil
}

// mfaEnroll gives the user an authenticator seed, shown once as a QR code. Enrolling ends the
// user's sessions and tokens (they were granted without the factor): the user signs in again with
// a code. A user who has one already asks an administrator for a new one.
func (u *UI) mfaEnroll(w http.ResponseWriter, r *http.Request, s *signedIn) error {
	p := s.principal
	if p.SSO() {
		u.render(w, r, http.StatusConflict, "error", s, map[string]any{"Title": "Signed in with SSO",
			"Message": "You sign in through your identity provider: it asks for your second factor."})
		return nil
	}
	if p.Kind != auth.KindUser || p.MFAEnrolled {
		u.render(w, r, http.StatusConflict, "error", s, map[string]any{"Title": "Already enrolled",
			"Message": "You have an authenticator: an administrator gives you a new one if you lost it."})
		return nil
	}
	uri, err := u.Auth.EnrollMFA(r.Context(), p.ID(), p.Name)
	if err != nil {
		return err
	}
	_ = u.Sessions.DeleteSession(r.Context(), s.session.IDHash, u.now())
	u.clearCookie(w, sessionCookie)
	seed := ""
	if parsed, err := url.Parse(uri.Reveal()); err == nil {
		seed = parsed.Query().Get("secret")
	}
	u.render(w, r, http.StatusOK, "mfa", nil, map[string]any{"Title": "Authenticator", "URI": uri, "Seed": secret.New(seed)})
	return nil
}

// logout ends the session and every token of the principal (its generation moves on).
func (u *UI) logout(w http.ResponseWriter, r *http.Request, s *signedIn) error {
	if err := u.Auth.Logout(r.Context(), s.principal); err != nil {
		return err
	}
	if err := u.Sessions.DeleteSession(r.Context(), s.session.IDHash, u.now()); err != nil {
		return err
	}
	u.clearCookie(w, sessionCookie)
	http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
	return nil
}

// myKeys lists the principal's teams and their current keys, without secrets.
func (u *UI) myKeys(w http.ResponseWriter, r *http.Request, s *signedIn) error {
	keys, err := u.Access.TeamKeys(r.Context(), s.principal)
	if err != nil {
		return err
	}
	u.render(w, r, http.StatusOK, "keys", s, map[string]any{"Title": "My keys", "Keys": keys, "SSO": s.principal.SSO()})
	return nil
}

// reveal shows a team's key (or, for a session-only team, a session) once: answered to a POST,
// recorded before it is shown, never cached, hidden again by the page after 60 seconds.
func (u *UI) reveal(w http.ResponseWriter, r *http.Request, s *signedIn) error {
	team := r.PathValue("team")
	data := map[string]any{"Title": "Key of " + team, "Team": team, "Server": u.serverURL(r)}
	c, err := u.Access.Credentials(r.Context(), s.principal, team)
	switch {
	case errors.Is(err, access.ErrSessionOnly): // the team hands out sessions only: one is made
		sc, err := u.Access.SessionCredentials(r.Context(), s.principal, team, access.DefaultSessionDuration)
		if err != nil {
			return err
		}
		data["KeyID"], data["Secret"], data["Token"], data["Expires"] = sc.AccessKeyID, sc.SecretAccessKey, sc.SessionToken, sc.Expiration
	case err != nil:
		return err
	default:
		data["KeyID"], data["Secret"], data["Expires"] = c.AccessKeyID, c.SecretAccessKey, c.Expiration
	}
	if data["Admins"], err = u.adminNames(r.Context()); err != nil {
		return err
	}
	u.render(w, r, http.StatusOK, "reveal", s, data)
	return nil
}

// adminNames are the enabled administrators: whom a member asks for an API key.
func (u *UI) adminNames(ctx context.Context) ([]string, error) {
	users, err := u.Auth.Users(ctx)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, us := range users {
		if us.Role == auth.RoleAdmin && us.DisabledAt.IsZero() {
			names = append(names, us.Name)
		}
	}
	return names, nil
}

// serverURL is this server's address, for the credential_process line.
func (u *UI) serverURL(r *http.Request) string {
	if u.ServerURL != "" {
		return u.ServerURL
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}
