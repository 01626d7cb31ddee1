package httpapi_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"

	"github.com/keyward/keyward/internal/auth"
	"github.com/keyward/keyward/internal/httpapi"
	"github.com/keyward/keyward/internal/testenv"
)

// idp is an OpenID Connect provider of our own, built on go-jose (the library go-oidc verifies
// with): discovery, JWKS, an authorization endpoint that approves at once, and a token endpoint
// that checks the client's secret and the PKCE verifier. Knobs change the next ID token.
type idp struct {
	t   *testing.T
	srv *httptest.Server

	mu     sync.Mutex
	key    *rsa.PrivateKey
	kid    string
	grants map[string]grant // code → what /authorize was asked

	// For the next sign-in:
	subject, name string
	groups, amr   []string
	audience      string        // "" = the client id
	lifetime      time.Duration // of the ID token (negative: expired already)
	nonce         string        // "" = the one asked for
}

type grant struct{ nonce, challenge, redirect string }

const clientID, clientSecret = "keyward", "the client secret"

func newIDP(t *testing.T) *idp {
	p := &idp{t: t, grants: map[string]grant{}, subject: "00u1", name: "Dana@Example.com", groups: []string{"platform"},
		amr: []string{"pwd", "mfa"}, lifetime: 5 * time.Minute}
	p.rotateKey()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{"issuer": p.srv.URL, "authorization_endpoint": p.srv.URL + "/authorize",
			"token_endpoint": p.srv.URL + "/token", "jwks_uri": p.srv.URL + "/jwks", "response_types_supported": []string{"code"},
			"subject_types_supported": []string{"public"}, "id_token_signing_alg_values_supported": []string{"RS256"},
			"code_challenge_methods_supported": []string{"S256"}})
	})
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, _ *http.Request) {
		p.mu.Lock()
		defer p.mu.Unlock()
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &p.key.PublicKey, KeyID: p.kid, Algorithm: "RS256", Use: "sig"}}})
	})
	mux.HandleFunc("GET /authorize", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if q.Get("client_id") != clientID || q.Get("response_type") != "code" || q.Get("code_challenge_method") != "S256" ||
			q.Get("code_challenge") == "" || q.Get("nonce") == "" || q.Get("state") == "" {
			http.Error(w, "bad authorization request: "+r.URL.RawQuery, http.StatusBadRequest)
			return
		}
		code := randomHex()
		p.mu.Lock()
		p.grants[code] = grant{nonce: q.Get("nonce"), challenge: q.Get("code_challenge"), redirect: q.Get("redirect_uri")}
		p.mu.Unlock()
		http.Redirect(w, r, q.Get("redirect_uri")+"?code="+code+"&state="+url.QueryEscape(q.Get("state")), http.StatusFound)
	})
	mux.HandleFunc("POST /token", func(w http.ResponseWriter, r *http.Request) {
		id, sec, ok := r.BasicAuth() // form-encoded inside Basic (RFC 6749 2.3.1)
		if ok {
			id, _ = url.QueryUnescape(id)
			sec, _ = url.QueryUnescape(sec)
		} else {
			id, sec = r.PostFormValue("client_id"), r.PostFormValue("client_secret")
		}
		if id != clientID || sec != clientSecret {
			http.Error(w, `{"error":"invalid_client"}`, http.StatusUnauthorized)
			return
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		g, found := p.grants[r.PostFormValue("code")]
		delete(p.grants, r.PostFormValue("code"))
		sum := sha256.Sum256([]byte(r.PostFormValue("code_verifier")))
		switch {
		case !found || g.redirect != r.PostFormValue("redirect_uri"):
			http.Error(w, `{"error":"invalid_grant"}`, http.StatusBadRequest)
			return
		case base64.RawURLEncoding.EncodeToString(sum[:]) != g.challenge:
			http.Error(w, `{"error":"invalid_grant","error_description":"PKCE verifier"}`, http.StatusBadRequest)
			return
		}
		aud, nonce := p.audience, p.nonce
		if aud == "" {
			aud = clientID
		}
		if nonce == "" {
			nonce = g.nonce
		}
		signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: p.key},
			(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", p.kid))
		if err != nil {
			p.t.Error(err)
			return
		}
		now := time.Now()
		idToken, err := josejwt.Signed(signer).Claims(josejwt.Claims{Issuer: p.srv.URL, Subject: p.subject,
			Audience: josejwt.Audience{aud}, IssuedAt: josejwt.NewNumericDate(now.Add(-time.Minute)),
			Expiry: josejwt.NewNumericDate(now.Add(p.lifetime))}).
			Claims(map[string]any{"nonce": nonce, "groups": p.groups, "amr": p.amr, "preferred_username": p.name}).Serialize()
		if err != nil {
			p.t.Error(err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": randomHex(), "token_type": "Bearer", "expires_in": 300, "id_token": idToken})
	})
	p.srv = httptest.NewServer(mux)
	t.Cleanup(p.srv.Close)
	return p
}

func randomHex() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// rotateKey replaces the provider's signing key, as IdPs do.
func (p *idp) rotateKey() {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		p.t.Fatal(err)
	}
	p.mu.Lock()
	p.key, p.kid = key, randomHex()[:8]
	p.mu.Unlock()
}

func (p *idp) set(fn func(p *idp)) { p.mu.Lock(); fn(p); p.mu.Unlock() }

// signIn walks the browser's part of the flow and returns Keyward's answer to the callback.
func signIn(t *testing.T, keyward string) (int, []byte, string) {
	t.Helper()
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Get(keyward + "/v1/auth/oidc/login")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("login: %d", resp.StatusCode)
	}
	resp, err = client.Get(resp.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("authorize: %d", resp.StatusCode)
	}
	callback := resp.Header.Get("Location")
	resp, err = client.Get(callback)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return resp.StatusCode, []byte(b.String()), callback
}

func TestOIDCSignIn(t *testing.T) {
	p := newIDP(t)
	f := newFixture(t, testenv.Database{Driver: "sqlite", DSN: t.TempDir() + "/k.db"}, nil)
	srv := f.reserve()
	o, err := httpapi.NewOIDC(context.Background(), p.srv.URL, clientID, clientSecret, srv.URL+"/v1/auth/oidc/callback", "groups",
		[]httpapi.OIDCRule{{Group: "platform", Role: auth.RoleOperator, Teams: []string{"payments"}},
			{Group: "payments-devs", Role: auth.RoleMember, Teams: []string{"payments", "search"}},
			{Group: "security", Role: auth.RoleAuditor}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	f.api.OIDC, f.srv = o, srv

	me := func(body []byte) map[string]any {
		t.Helper()
		var tok struct{ Token string }
		if err := json.Unmarshal(body, &tok); err != nil || tok.Token == "" {
			t.Fatalf("no token: %s", body)
		}
		status, raw := f.do("GET", "/v1/me", bearer(tok.Token), nil)
		var m map[string]any
		if status != 200 || json.Unmarshal(raw, &m) != nil {
			t.Fatalf("me: %d %s", status, raw)
		}
		return m
	}

	status, body, callback := signIn(t, srv.URL)
	if status != 200 {
		t.Fatalf("sign-in: %d %s\n%s", status, body, f.logs.String()[max(0, len(f.logs.String())-2000):])
	}
	m := me(body)
	if m["name"] != "dana" || m["role"] != "operator" || m["mfa"] != true || len(m["teams"].([]any)) != 1 || m["teams"].([]any)[0] != "payments" {
		t.Fatalf("signed in as %v", m)
	}
	// The callback's state works once.
	if status, body := f.do("GET", strings.TrimPrefix(callback, srv.URL), nil, nil); status != 401 {
		t.Fatalf("callback replayed: %d %s", status, body)
	}

	// Groups change at the IdP: role and teams follow at the next sign-in (the most powerful role).
	p.set(func(p *idp) { p.groups = []string{"payments-devs", "security"}; p.amr = []string{"pwd"} })
	_, body, _ = signIn(t, srv.URL)
	m = me(body)
	if m["role"] != "auditor" || len(m["teams"].([]any)) != 2 || m["mfa"] != false {
		t.Fatalf("after the groups changed: %v", m)
	}

	// The IdP changes its signing key: the next ID token is checked with the new key, fetched anew.
	p.rotateKey()
	p.set(func(p *idp) { p.groups = []string{"platform"} })
	if status, body, _ := signIn(t, srv.URL); status != 200 {
		t.Fatalf("after the IdP's key change: %d %s", status, body)
	}

	for name, c := range map[string]struct {
		knob   func(p *idp)
		status int
		detail string
	}{
		"expired ID token": {func(p *idp) { p.lifetime = -time.Minute }, 401, "token is expired"},
		"wrong audience":   {func(p *idp) { p.audience = "another-client" }, 401, "expected audience"},
		"wrong nonce":      {func(p *idp) { p.nonce = "not-the-nonce" }, 401, "wrong nonce"},
		"no group mapped":  {func(p *idp) { p.groups = []string{"marketing"} }, 403, ""},
	} {
		p.set(func(p *idp) {
			p.lifetime, p.audience, p.nonce, p.groups = 5*time.Minute, "", "", []string{"platform"}
			c.knob(p)
		})
		status, body, _ := signIn(t, srv.URL)
		if status != c.status {
			t.Errorf("%s: %d %s", name, status, body)
		}
		// The caller is told only "invalid credentials"; the log says why.
		if c.detail != "" && (!strings.Contains(f.logs.String(), c.detail) || strings.Contains(string(body), c.detail)) {
			t.Errorf("%s: the log does not say %q, or the caller is told: %s", name, c.detail, body)
		}
	}

	// The audit trail has the sign-ins and the user's creation.
	_, raw := f.do("GET", "/v1/audit?action=auth.sso", f.creds["auditor"], nil)
	if n := strings.Count(string(raw), `"action":"auth.sso"`); n != 3 {
		t.Fatalf("%d sign-ins audited: %s", n, raw)
	}
}
