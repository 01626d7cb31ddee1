package httpapi

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/keyward/keyward/internal/auth"
)

// OIDCRule maps an identity provider's group to a role and teams.
type OIDCRule struct {
	Group string
	Role  auth.Role
	Teams []string
}

// OIDC signs users in through an OpenID Connect provider: the authorization code flow with PKCE
// (S256), a nonce, and a state kept in the database for ten minutes and usable once.
type OIDC struct {
	oauth       oauth2.Config
	verifier    *oidc.IDTokenVerifier
	groupsClaim string
	rules       []OIDCRule
	client      *http.Client
}

// NewOIDC reads the provider's discovery document. client may be nil (http.DefaultClient).
func NewOIDC(ctx context.Context, issuer, clientID, clientSecret, redirectURL, groupsClaim string, rules []OIDCRule, client *http.Client) (*OIDC, error) {
	if client == nil {
		client = http.DefaultClient
	}
	ctx = oidc.ClientContext(ctx, client)
	p, err := oidc.NewProvider(ctx, issuer)
	if err != nil {
		return nil, fmt.Errorf("OIDC provider %s (auth.oidc.issuer): %w", issuer, err)
	}
	return &OIDC{
		oauth: oauth2.Config{ClientID: clientID, ClientSecret: clientSecret, RedirectURL: redirectURL,
			Endpoint: p.Endpoint(), Scopes: []string{oidc.ScopeOpenID, "profile", "email"}},
		// The verifier checks the signature (re-reading the provider's keys when it meets a new one),
		// the issuer, the audience (our client id) and the expiry.
		verifier:    p.VerifierContext(oidc.ClientContext(context.Background(), client), &oidc.Config{ClientID: clientID}),
		groupsClaim: groupsClaim, rules: rules, client: client,
	}, nil
}

func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// oidcLogin redirects to the provider.
func (a *API) oidcLogin(w http.ResponseWriter, r *http.Request, _ *auth.Principal) error {
	if a.OIDC == nil {
		problem(w, r, http.StatusNotFound, "not-found", "single sign-on is not configured (auth.oidc.issuer)")
		return nil
	}
	to, err := a.OIDC.Begin(r.Context(), a.Auth, "")
	if err != nil {
		return err
	}
	http.Redirect(w, r, to, http.StatusFound)
	return nil
}

// config is the OAuth configuration with the redirect address of the caller's flow ("" for the
// configured one, the API's).
func (o *OIDC) config(redirectURL string) oauth2.Config {
	c := o.oauth
	if redirectURL != "" {
		c.RedirectURL = redirectURL
	}
	return c
}

// Begin starts a sign-in: the state, nonce and PKCE verifier kept (ten minutes, once), and the
// provider's address to send the browser to. redirectURL is where the provider sends it back ("" for
// the configured auth.oidc.redirect_url; the web pages use their own).
func (o *OIDC) Begin(ctx context.Context, svc *auth.Service, redirectURL string) (string, error) {
	l := auth.OIDCLogin{State: randomToken(), Nonce: randomToken(), Verifier: oauth2.GenerateVerifier(),
		ExpiresAt: time.Now().Add(10 * time.Minute)}
	if err := svc.Store().PutOIDCLogin(ctx, l); err != nil {
		return "", err
	}
	c := o.config(redirectURL)
	return c.AuthCodeURL(l.State, oidc.Nonce(l.Nonce), oauth2.S256ChallengeOption(l.Verifier)), nil
}

// oidcCallback finishes the flow: the code is exchanged with the PKCE verifier, the ID token checked
// (signature, issuer, audience, expiry, nonce), the user's groups mapped, and a Keyward token issued.
func (a *API) oidcCallback(w http.ResponseWriter, r *http.Request, _ *auth.Principal) error {
	if a.OIDC == nil {
		problem(w, r, http.StatusNotFound, "not-found", "single sign-on is not configured (auth.oidc.issuer)")
		return nil
	}
	q := r.URL.Query()
	if e := q.Get("error"); e != "" {
		return fmt.Errorf("%w: the identity provider refused: %.200s", auth.ErrUnauthenticated, e)
	}
	state, code := q.Get("state"), q.Get("code")
	if state == "" || code == "" {
		return badf("state and code are required")
	}
	t, err := a.OIDC.Finish(r.Context(), a.Auth, "", state, code)
	if err != nil {
		return err
	}
	return writeToken(w, t)
}

// Finish ends a sign-in begun with Begin (the same redirectURL): the code is exchanged with the
// PKCE verifier, the ID token checked (signature, issuer, audience, expiry, nonce), the user's groups
// mapped through the rules, and a Keyward token issued.
func (o *OIDC) Finish(ctx context.Context, svc *auth.Service, redirectURL, state, code string) (auth.Token, error) {
	l, err := svc.Store().TakeOIDCLogin(ctx, state)
	if errors.Is(err, auth.ErrNotFound) || (err == nil && time.Now().After(l.ExpiresAt)) {
		return auth.Token{}, fmt.Errorf("%w: unknown or expired sign-in; start again", auth.ErrUnauthenticated)
	} else if err != nil {
		return auth.Token{}, err
	}
	cctx := oidc.ClientContext(ctx, o.client)
	c := o.config(redirectURL)
	tok, err := c.Exchange(cctx, code, oauth2.VerifierOption(l.Verifier))
	if err != nil {
		return auth.Token{}, fmt.Errorf("%w: code exchange: %v", auth.ErrUnauthenticated, err)
	}
	raw, ok := tok.Extra("id_token").(string)
	if !ok {
		return auth.Token{}, fmt.Errorf("%w: the provider returned no ID token", auth.ErrUnauthenticated)
	}
	idt, err := o.verifier.Verify(cctx, raw)
	if err != nil {
		return auth.Token{}, fmt.Errorf("%w: ID token: %v", auth.ErrUnauthenticated, err)
	}
	if idt.Nonce != l.Nonce {
		return auth.Token{}, fmt.Errorf("%w: ID token: wrong nonce", auth.ErrUnauthenticated)
	}
	var claims map[string]any
	if err := idt.Claims(&claims); err != nil {
		return auth.Token{}, fmt.Errorf("%w: ID token claims: %v", auth.ErrUnauthenticated, err)
	}
	id, err := o.identity(idt.Subject, claims)
	if err != nil {
		return auth.Token{}, err
	}
	return svc.SignInSSO(ctx, id)
}

// identity maps the ID token's claims through the rules: the most powerful role of the matching
// rules, and all their teams. No rule matches: forbidden.
func (o *OIDC) identity(subject string, claims map[string]any) (auth.SSOIdentity, error) {
	var groups []string
	if list, ok := claims[o.groupsClaim].([]any); ok {
		for _, g := range list {
			if s, ok := g.(string); ok {
				groups = append(groups, s)
			}
		}
	}
	id := auth.SSOIdentity{Subject: subject}
	best := len(auth.Roles)
	for _, rule := range o.rules {
		if !slices.Contains(groups, rule.Group) {
			continue
		}
		if i := slices.Index(auth.Roles, rule.Role); i >= 0 && i < best {
			best = i
		}
		for _, t := range rule.Teams {
			if !slices.Contains(id.Teams, t) {
				id.Teams = append(id.Teams, t)
			}
		}
	}
	if best == len(auth.Roles) {
		return id, fmt.Errorf("%w: none of your groups is given access (auth.oidc.rules)", auth.ErrForbidden)
	}
	id.Role = auth.Roles[best]
	for _, k := range []string{"preferred_username", "email"} {
		if s, ok := claims[k].(string); ok && s != "" {
			id.Name = s
			break
		}
	}
	if amr, ok := claims["amr"].([]any); ok {
		for _, m := range amr {
			if s, _ := m.(string); s == "mfa" || s == "otp" || s == "hwk" || s == "swk" {
				id.MFA = true
			}
		}
	}
	return id, nil
}
