package auth_test

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/pquerna/otp/totp"

	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/auth"
	"github.com/keyward/keyward/internal/secret"
	"github.com/keyward/keyward/internal/store"
	"github.com/keyward/keyward/internal/store/storetest"
	"github.com/keyward/keyward/internal/testenv"
	"github.com/keyward/keyward/internal/vault"
)

var fastArgon2 = auth.Argon2Params{MemoryKiB: 64, Iterations: 1, Parallelism: 1}

func testConfig() auth.Config {
	return auth.Config{Argon2: fastArgon2, RequireMFA: []auth.Role{auth.RoleAdmin, auth.RoleMember},
		Issuer: "https://keyward.test", Audience: "keyward", TokenTTL: 2 * time.Minute, KeyRotation: 24 * time.Hour,
		Lockout: auth.Lockout{MaxFailures: 3, IPMaxFailures: 5, Duration: 15 * time.Minute, Delay: time.Millisecond, MaxDelay: 4 * time.Millisecond}}
}

type world struct {
	db    *store.DB
	v     *vault.Vault
	svc   *auth.Service
	clock *testenv.Clock
	trail *audit.Trail
}

func newWorld(t *testing.T, d testenv.Database) *world {
	t.Helper()
	db := storetest.Open(t, d)
	clock := testenv.NewClock(time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC))
	v := storetest.Vault(t, db, clock.Now)
	trail := audit.New(db.Audit(), clock.Now, nil)
	svc, err := auth.New(testConfig(), db.Auth(), v, trail, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	w := &world{db: db, v: v, svc: svc, clock: clock, trail: trail}
	ctx := context.Background()
	for _, team := range []string{"payments", "search"} {
		if _, err := svc.AddTeam(ctx, "cli:test", auth.Team{Name: team,
			Identity: vault.Identity{Cloud: vault.CloudAWS, AccountID: "123456789012", UserName: team + "-app"}}); err != nil {
			t.Fatal(err)
		}
	}
	return w
}

func (w *world) actions(t *testing.T) []string {
	t.Helper()
	var out []string
	if err := w.trail.Export(context.Background(), time.Time{}, time.Time{}, func(r audit.Record) error {
		out = append(out, r.Action+" "+r.Target+" "+r.Outcome)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestPasswordHash(t *testing.T) {
	pw := secret.New("correct horse battery staple")
	h, err := auth.HashPassword(pw, auth.DefaultArgon2)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=19456,t=2,p=1$") || strings.Contains(h, pw.Reveal()) {
		t.Fatalf("hash %q", h)
	}
	if !auth.VerifyPassword(pw, h) {
		t.Fatal("the right password does not verify")
	}
	for _, bad := range []string{"correct horse battery stapl", "", "Correct horse battery staple"} {
		if auth.VerifyPassword(secret.New(bad), h) {
			t.Fatalf("%q verifies", bad)
		}
	}
	for _, malformed := range []string{"", "$argon2i$v=19$m=64,t=1,p=1$c2FsdA$aGFzaA", h[:len(h)-10], strings.Replace(h, "m=19456", "m=1", 1)} {
		if auth.VerifyPassword(pw, malformed) {
			t.Fatalf("malformed hash %q verifies", malformed)
		}
	}
	if err := auth.CheckPassword(secret.New("short")); err == nil {
		t.Fatal("a 5-character password is accepted")
	}
}

func TestAuthorize(t *testing.T) {
	member := &auth.Principal{Kind: auth.KindAPIKey, Name: "ci", Role: auth.RoleMember, Teams: []string{"payments"}}
	if err := member.Authorize(auth.ReadCredentials, "payments"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		p    *auth.Principal
		perm auth.Permission
		team string
		want error
	}{
		{member, auth.ReadCredentials, "search", auth.ErrForbidden},
		{member, auth.ReadCredentials, "Payments", auth.ErrForbidden},
		{member, auth.Rotate, "payments", auth.ErrForbidden},
		{member, auth.Administer, "", auth.ErrForbidden},
		{nil, auth.Authenticated, "", auth.ErrForbidden},
		{&auth.Principal{Role: auth.RoleAuditor, Teams: []string{"payments"}}, auth.ReadCredentials, "payments", auth.ErrForbidden},
		{&auth.Principal{Role: auth.RoleOperator}, auth.ReadCredentials, "payments", auth.ErrForbidden},
		{&auth.Principal{Role: auth.RoleOperator}, auth.ReadAudit, "", auth.ErrForbidden},
		{&auth.Principal{Kind: auth.KindUser, Role: auth.RoleAdmin}, auth.Export, "", auth.ErrMFARequired},
		{&auth.Principal{Kind: auth.KindUser, Role: auth.RoleAdmin, MFA: true}, auth.Export, "", nil},
		{&auth.Principal{Kind: auth.KindUser, Role: auth.RoleAdmin}, auth.ReadCredentials, "search", nil},
		// An API key reads its own teams' keys only, whatever its role, and never exports.
		{&auth.Principal{Kind: auth.KindAPIKey, Role: auth.RoleAdmin}, auth.ReadCredentials, "search", auth.ErrForbidden},
		{&auth.Principal{Kind: auth.KindAPIKey, Role: auth.RoleAdmin, Teams: []string{"search"}}, auth.ReadCredentials, "search", nil},
		{&auth.Principal{Kind: auth.KindAPIKey, Role: auth.RoleAdmin}, auth.Export, "", auth.ErrMFARequired},
		{&auth.Principal{Role: "root"}, auth.Authenticated, "", auth.ErrForbidden},
	} {
		if err := c.p.Authorize(c.perm, c.team); !errors.Is(err, c.want) || (c.want == nil && err != nil) {
			t.Errorf("%+v may %s on %q: got %v, want %v", c.p, c.perm, c.team, err, c.want)
		}
	}
}

func TestUsersLoginAndTokens(t *testing.T) {
	testenv.ForEachDatabase(t, func(t *testing.T, d testenv.Database) {
		ctx := context.Background()
		w := newWorld(t, d)
		pw := secret.New("a long enough password")
		if _, err := w.svc.AddUser(ctx, "cli:test", "alice", auth.RoleOperator, []string{"payments"}, pw); err != nil {
			t.Fatal(err)
		}
		if _, err := w.svc.AddUser(ctx, "cli:test", "alice", auth.RoleOperator, nil, pw); !errors.Is(err, auth.ErrExists) {
			t.Fatalf("a second alice: %v", err)
		}
		if _, err := w.svc.AddUser(ctx, "cli:test", "bob", auth.RoleMember, []string{"nope"}, pw); !errors.Is(err, auth.ErrNotFound) {
			t.Fatalf("a user in a team that does not exist: %v", err)
		}
		if _, err := w.svc.AddUser(ctx, "cli:test", "Bob", auth.RoleMember, nil, pw); err == nil || !strings.Contains(err.Error(), `"Bob"`) {
			t.Fatalf("an upper-case name: %v", err)
		}

		tok, err := w.svc.Login(ctx, "alice", pw, "", "192.0.2.1")
		if err != nil {
			t.Fatal(err)
		}
		if !tok.ExpiresAt.Equal(w.clock.Now().Add(2 * time.Minute)) {
			t.Fatalf("expires %s", tok.ExpiresAt)
		}
		p, err := w.svc.Authenticate(ctx, tok.Token.Reveal())
		if err != nil {
			t.Fatal(err)
		}
		if p.ID() != "user:alice" || p.Role != auth.RoleOperator || len(p.Teams) != 1 || p.Teams[0] != "payments" || p.MFA {
			t.Fatalf("principal %+v", p)
		}

		// Expiry, on Keyward's clock, with no leeway.
		w.clock.Add(2*time.Minute - time.Second)
		if _, err := w.svc.Authenticate(ctx, tok.Token.Reveal()); err != nil {
			t.Fatalf("a second before expiry: %v", err)
		}
		w.clock.Add(time.Second)
		if _, err := w.svc.Authenticate(ctx, tok.Token.Reveal()); !errors.Is(err, auth.ErrUnauthenticated) {
			t.Fatalf("at expiry: %v", err)
		}

		// Logout revokes the user's tokens; a new login works.
		tok, _ = w.svc.Login(ctx, "alice", pw, "", "192.0.2.1")
		p, _ = w.svc.Authenticate(ctx, tok.Token.Reveal())
		if err := w.svc.Logout(ctx, p); err != nil {
			t.Fatal(err)
		}
		if _, err := w.svc.Authenticate(ctx, tok.Token.Reveal()); !errors.Is(err, auth.ErrUnauthenticated) {
			t.Fatalf("after logout: %v", err)
		}
		tok, _ = w.svc.Login(ctx, "alice", pw, "", "192.0.2.1")
		if _, err := w.svc.Authenticate(ctx, tok.Token.Reveal()); err != nil {
			t.Fatalf("after a new login: %v", err)
		}
		// Disabling revokes them too, and stops logins.
		if err := w.svc.DisableUser(ctx, "cli:test", "alice"); err != nil {
			t.Fatal(err)
		}
		if _, err := w.svc.Authenticate(ctx, tok.Token.Reveal()); !errors.Is(err, auth.ErrUnauthenticated) {
			t.Fatalf("after disabling: %v", err)
		}
		if _, err := w.svc.Login(ctx, "alice", pw, "", "192.0.2.1"); !errors.Is(err, auth.ErrUnauthenticated) {
			t.Fatalf("a disabled user logs in: %v", err)
		}

		got := strings.Join(w.actions(t), "\n")
		for _, want := range []string{"user.created user:alice success", "auth.login user:alice success",
			"auth.logout user:alice success", "user.disabled user:alice success", "auth.login user:alice failure"} {
			if !strings.Contains(got, want) {
				t.Errorf("audit trail lacks %q:\n%s", want, got)
			}
		}
		if strings.Contains(got, pw.Reveal()) {
			t.Fatal("the password is in the audit trail")
		}
	})
}

func TestLockoutWithoutEnumeration(t *testing.T) {
	testenv.ForEachDatabase(t, func(t *testing.T, d testenv.Database) {
		ctx := context.Background()
		w := newWorld(t, d)
		pw := secret.New("a long enough password")
		if _, err := w.svc.AddUser(ctx, "cli:test", "alice", auth.RoleAuditor, nil, pw); err != nil {
			t.Fatal(err)
		}
		// A known and an unknown user fail alike, and are locked alike after three failures.
		for _, name := range []string{"alice", "mallory"} {
			var errs []string
			for i := 0; i < 4; i++ {
				_, err := w.svc.Login(ctx, name, secret.New("wrong password here"), "", "198.51.100."+string(rune('1'+i)))
				errs = append(errs, err.Error())
			}
			want := "invalid credentials|invalid credentials|invalid credentials|too many failed attempts: try again in 15m0s"
			if got := strings.Join(errs, "|"); got != want {
				t.Fatalf("%s: %s", name, got)
			}
		}
		// The right password does not get through a lock; it does after it.
		var locked *auth.LockedError
		if _, err := w.svc.Login(ctx, "alice", pw, "", "203.0.113.9"); !errors.As(err, &locked) {
			t.Fatalf("locked alice: %v", err)
		}
		w.clock.Add(15*time.Minute + time.Second)
		if _, err := w.svc.Login(ctx, "alice", pw, "", "203.0.113.9"); err != nil {
			t.Fatalf("after the lock: %v", err)
		}
		// One address guessing many names is locked after five failures.
		for i := 0; i < 5; i++ {
			_, _ = w.svc.Login(ctx, "user"+string(rune('a'+i)), secret.New("wrong password here"), "", "192.0.2.66")
		}
		if _, err := w.svc.Login(ctx, "alice", pw, "", "192.0.2.66"); !errors.As(err, &locked) {
			t.Fatalf("from a locked address: %v", err)
		}
	})
}

func TestMFA(t *testing.T) {
	testenv.ForEachDatabase(t, func(t *testing.T, d testenv.Database) {
		ctx := context.Background()
		w := newWorld(t, d)
		pw := secret.New("a long enough password")
		if _, err := w.svc.AddUser(ctx, "cli:test", "carol", auth.RoleMember, []string{"payments"}, pw); err != nil {
			t.Fatal(err)
		}
		// Without MFA, a member logs in but may not read a secret.
		tok, err := w.svc.Login(ctx, "carol", pw, "", "")
		if err != nil {
			t.Fatal(err)
		}
		p, _ := w.svc.Authenticate(ctx, tok.Token.Reveal())
		if err := p.Authorize(auth.ReadCredentials, "payments"); !errors.Is(err, auth.ErrMFARequired) {
			t.Fatalf("member without MFA reads: %v", err)
		}

		uri, err := w.svc.EnrollMFA(ctx, "cli:test", "carol")
		if err != nil {
			t.Fatal(err)
		}
		u, err := url.Parse(uri.Reveal())
		if err != nil || u.Scheme != "otpauth" || u.Host != "totp" || u.Query().Get("issuer") != "Keyward" {
			t.Fatalf("URI %q: %v", uri.Reveal(), err)
		}
		seed := u.Query().Get("secret")
		// The seed is sealed: it is nowhere in the database in the clear.
		if raw := storetest.Dump(t, d); strings.Contains(raw, seed) {
			t.Fatal("the TOTP seed is in the database in the clear")
		}
		// Enrolling revoked the tokens of before.
		if _, err := w.svc.Authenticate(ctx, tok.Token.Reveal()); !errors.Is(err, auth.ErrUnauthenticated) {
			t.Fatalf("a token from before enrolment: %v", err)
		}
		if _, err := w.svc.Login(ctx, "carol", pw, "", ""); !errors.Is(err, auth.ErrUnauthenticated) {
			t.Fatalf("login without a code: %v", err)
		}
		if _, err := w.svc.Login(ctx, "carol", pw, "000000x", ""); !errors.Is(err, auth.ErrUnauthenticated) {
			t.Fatalf("login with a bad code: %v", err)
		}
		code, err := totp.GenerateCode(seed, w.clock.Now())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.svc.Login(ctx, "carol", secret.New("the wrong password"), code, ""); !errors.Is(err, auth.ErrUnauthenticated) {
			t.Fatalf("a code with the wrong password: %v", err)
		}
		w.clock.Add(16 * time.Minute) // three failures locked carol
		code, _ = totp.GenerateCode(seed, w.clock.Now())
		tok, err = w.svc.Login(ctx, "carol", pw, code, "")
		if err != nil {
			t.Fatal(err)
		}
		p, err = w.svc.Authenticate(ctx, tok.Token.Reveal())
		if err != nil || !p.MFA {
			t.Fatalf("principal %+v, %v", p, err)
		}
		if err := p.Authorize(auth.ReadCredentials, "payments"); err != nil {
			t.Fatal(err)
		}

		// Each code signs in once (RFC 6238 §5.2); a code older than the last one used never does.
		login := func(at time.Time) error {
			code, err := totp.GenerateCode(seed, at)
			if err != nil {
				t.Fatal(err)
			}
			_, err = w.svc.Login(ctx, "carol", pw, code, "")
			return err
		}
		if err := login(w.clock.Now()); !errors.Is(err, auth.ErrUnauthenticated) {
			t.Fatalf("the same code again: %v", err)
		}
		if err := login(w.clock.Now().Add(-30 * time.Second)); !errors.Is(err, auth.ErrUnauthenticated) {
			t.Fatalf("the previous step's code, after a later one was used: %v", err)
		}
		w.clock.Add(30 * time.Second)
		if err := login(w.clock.Now()); err != nil {
			t.Fatalf("the next step's code: %v", err)
		}
		if err := login(w.clock.Now().Add(30 * time.Second)); err != nil {
			t.Fatalf("a code one step ahead (a phone's clock runs fast): %v", err)
		}
		if err := login(w.clock.Now()); !errors.Is(err, auth.ErrUnauthenticated) {
			t.Fatalf("the current step's code after the next step's was used: %v", err)
		}
	})
}

func TestAPIKeys(t *testing.T) {
	testenv.ForEachDatabase(t, func(t *testing.T, d testenv.Database) {
		ctx := context.Background()
		w := newWorld(t, d)
		cidr := netip.MustParsePrefix("10.0.0.0/8")
		k, value, err := w.svc.CreateAPIKey(ctx, "cli:test", "ci", auth.RoleMember, []string{"search"}, []netip.Prefix{cidr}, 24*time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(value.Reveal(), "kw_"+k.KeyID+"_") || len(value.Reveal()) != 3+16+1+43 {
			t.Fatalf("key %q", value.Reveal())
		}
		if strings.Contains(storetest.Dump(t, d), value.Reveal()) {
			t.Fatal("the API key is stored in the clear")
		}
		p, err := w.svc.AuthenticateAPIKey(ctx, value.Reveal())
		if err != nil {
			t.Fatal(err)
		}
		if p.ID() != "apikey:ci" || p.Role != auth.RoleMember || len(p.CIDRs) != 1 || p.CIDRs[0] != cidr || p.Teams[0] != "search" {
			t.Fatalf("principal %+v", p)
		}
		if err := p.Authorize(auth.ReadCredentials, "search"); err != nil {
			t.Fatalf("a machine needs no MFA: %v", err)
		}
		wrong := value.Reveal()[:len(value.Reveal())-1] + "A"
		if wrong == value.Reveal() {
			wrong = value.Reveal()[:len(value.Reveal())-1] + "B"
		}
		for _, bad := range []string{wrong, "kw_short_x", "", "Bearer " + value.Reveal()} {
			if _, err := w.svc.AuthenticateAPIKey(ctx, bad); !errors.Is(err, auth.ErrUnauthenticated) {
				t.Fatalf("%q: %v", bad, err)
			}
		}
		tok, err := w.svc.TokenForAPIKey(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.svc.Authenticate(ctx, tok.Token.Reveal()); err != nil {
			t.Fatal(err)
		}
		if err := w.svc.RevokeAPIKey(ctx, "cli:test", "ci"); err != nil {
			t.Fatal(err)
		}
		if _, err := w.svc.AuthenticateAPIKey(ctx, value.Reveal()); !errors.Is(err, auth.ErrUnauthenticated) {
			t.Fatalf("revoked key: %v", err)
		}
		if _, err := w.svc.Authenticate(ctx, tok.Token.Reveal()); !errors.Is(err, auth.ErrUnauthenticated) {
			t.Fatalf("a token of a revoked key: %v", err)
		}
		// Expiry.
		_, v2, err := w.svc.CreateAPIKey(ctx, "cli:test", "short", auth.RoleAuditor, nil, nil, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		w.clock.Add(time.Hour)
		if _, err := w.svc.AuthenticateAPIKey(ctx, v2.Reveal()); !errors.Is(err, auth.ErrUnauthenticated) {
			t.Fatalf("expired key: %v", err)
		}
		got := strings.Join(w.actions(t), "\n")
		if !strings.Contains(got, "apikey.created apikey:ci success") || !strings.Contains(got, "apikey.revoked apikey:ci success") ||
			!strings.Contains(got, "auth.token apikey:ci success") || strings.Contains(got, value.Reveal()) {
			t.Fatalf("audit trail:\n%s", got)
		}
	})
}

// forged signs claims as an attacker might: with another key, another algorithm, or none.
func forged(t *testing.T, method jwt.SigningMethod, key any, kid string, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// signInAlice adds alice, an auditor with password pw, to w and returns the token of her login.
func signInAlice(t *testing.T, w *world, pw secret.Value) auth.Token {
	t.Helper()
	ctx := context.Background()
	if _, err := w.svc.AddUser(ctx, "cli:test", "alice", auth.RoleAuditor, nil, pw); err != nil {
		t.Fatal(err)
	}
	tok, err := w.svc.Login(ctx, "alice", pw, "", "")
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestTokensRefused(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t, testenv.Database{Driver: "sqlite", DSN: t.TempDir() + "/k.db"})
	pw := secret.New("a long enough password")
	good := signInAlice(t, w, pw)
	var set struct {
		Keys []struct{ Kty, Crv, X, Kid, Alg string }
	}
	raw, err := w.svc.Tokens().JWKS(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &set); err != nil || len(set.Keys) != 1 || set.Keys[0].Kty != "OKP" || set.Keys[0].Alg != "EdDSA" {
		t.Fatalf("JWKS %s: %v", raw, err)
	}
	kid := set.Keys[0].Kid
	pub, _ := base64.RawURLEncoding.DecodeString(set.Keys[0].X)
	now := w.clock.Now()
	claims := func(mod func(jwt.MapClaims)) jwt.MapClaims {
		c := jwt.MapClaims{"iss": "https://keyward.test", "aud": "keyward", "sub": "user:alice", "gen": 0,
			"exp": now.Add(time.Minute).Unix(), "nbf": now.Unix(), "iat": now.Unix()}
		if mod != nil {
			mod(c)
		}
		return c
	}
	_, otherKey, _ := ed25519.GenerateKey(nil)
	// Another Keyward instance: its own vault, its own key.
	other := newWorld(t, testenv.Database{Driver: "sqlite", DSN: t.TempDir() + "/other.db"})
	foreign := signInAlice(t, other, pw)
	noneTok := forged(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, kid, claims(nil))
	for name, tok := range map[string]string{
		"alg none":                        noneTok,
		"HS256 keyed with the public key": forged(t, jwt.SigningMethodHS256, pub, kid, claims(nil)),
		"another key, our kid":            forged(t, jwt.SigningMethodEdDSA, otherKey, kid, claims(nil)),
		"another Keyward":                 foreign.Token.Reveal(),
		"expired":                         forged(t, jwt.SigningMethodEdDSA, otherKey, kid, claims(func(c jwt.MapClaims) { c["exp"] = now.Add(-time.Second).Unix() })),
		"empty":                           "",
		"garbage":                         "a.b.c",
	} {
		if _, err := w.svc.Authenticate(ctx, tok); !errors.Is(err, auth.ErrUnauthenticated) {
			t.Errorf("%s: %v", name, err)
		}
	}
	// The same claims signed by our own key pass only when every claim is right.
	if _, err := w.svc.Authenticate(ctx, good.Token.Reveal()); err != nil {
		t.Fatal(err)
	}
	keys, err := w.v.SigningKeys(ctx, auth.PurposeToken)
	if err != nil || len(keys) != 1 {
		t.Fatalf("%d keys: %v", len(keys), err)
	}
	ours := keys[0].Signer()
	if _, err := w.svc.Authenticate(ctx, forged(t, jwt.SigningMethodEdDSA, ours, kid, claims(nil))); err != nil {
		t.Fatalf("well-formed token: %v", err)
	}
	for name, mod := range map[string]func(jwt.MapClaims){
		"wrong audience":     func(c jwt.MapClaims) { c["aud"] = "another-api" },
		"wrong issuer":       func(c jwt.MapClaims) { c["iss"] = "https://evil.test" },
		"no expiry":          func(c jwt.MapClaims) { delete(c, "exp") },
		"no not-before":      func(c jwt.MapClaims) { delete(c, "nbf") },
		"not yet valid":      func(c jwt.MapClaims) { c["nbf"] = now.Add(time.Second).Unix() },
		"old generation":     func(c jwt.MapClaims) { c["gen"] = -1 },
		"unknown subject":    func(c jwt.MapClaims) { c["sub"] = "user:mallory" },
		"subject of no kind": func(c jwt.MapClaims) { c["sub"] = "alice" },
	} {
		if _, err := w.svc.Authenticate(ctx, forged(t, jwt.SigningMethodEdDSA, ours, kid, claims(mod))); !errors.Is(err, auth.ErrUnauthenticated) {
			t.Errorf("%s: %v", name, err)
		}
	}

	// Key rotation: a new key signs; the old one checks its tokens for one token lifetime more.
	w.clock.Add(24 * time.Hour)
	fresh, err := w.svc.Login(ctx, "alice", pw, "", "")
	if err != nil {
		t.Fatal(err)
	}
	keys, _ = w.v.SigningKeys(ctx, auth.PurposeToken)
	if len(keys) != 2 {
		t.Fatalf("%d signing keys after a day", len(keys))
	}
	oldTok := forged(t, jwt.SigningMethodEdDSA, ours, kid, jwt.MapClaims{"iss": "https://keyward.test", "aud": "keyward",
		"sub": "user:alice", "gen": 0, "exp": w.clock.Now().Add(time.Minute).Unix(), "nbf": w.clock.Now().Unix()})
	if _, err := w.svc.Authenticate(ctx, oldTok); err != nil {
		t.Fatalf("a token of the previous key, just after rotation: %v", err)
	}
	raw, _ = w.svc.Tokens().JWKS(ctx)
	if n := strings.Count(string(raw), `"kid"`); n != 2 {
		t.Fatalf("JWKS just after rotation has %d keys: %s", n, raw)
	}
	w.clock.Add(2*time.Minute + time.Second)
	if _, err := w.svc.Authenticate(ctx, forged(t, jwt.SigningMethodEdDSA, ours, kid, jwt.MapClaims{"iss": "https://keyward.test",
		"aud": "keyward", "sub": "user:alice", "gen": 0, "exp": w.clock.Now().Add(time.Minute).Unix(), "nbf": w.clock.Now().Unix()})); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatalf("a token of a retired key: %v", err)
	}
	raw, _ = w.svc.Tokens().JWKS(ctx)
	if n := strings.Count(string(raw), `"kid"`); n != 1 {
		t.Fatalf("JWKS long after rotation has %d keys: %s", n, raw)
	}
	_ = fresh
}

// A token checked once is remembered, but only its signature check is spared: a changed byte, its
// expiry and the retirement of the key that signed it each refuse it again.
func TestRememberedTokensCheckedOnEveryUse(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t, testenv.Database{Driver: "sqlite", DSN: t.TempDir() + "/k.db"})
	pw := secret.New("a long enough password")
	login := signInAlice(t, w, pw)
	short := login.Token.Reveal()
	keys, err := w.v.SigningKeys(ctx, auth.PurposeToken)
	if err != nil || len(keys) != 1 {
		t.Fatalf("%d keys: %v", len(keys), err)
	}
	now := w.clock.Now()
	long := forged(t, jwt.SigningMethodEdDSA, keys[0].Signer(), keys[0].ID, jwt.MapClaims{"iss": "https://keyward.test",
		"aud": "keyward", "sub": "user:alice", "gen": 0, "exp": now.Add(48 * time.Hour).Unix(), "nbf": now.Unix()})
	accepted := func(name, tok string, want bool) {
		t.Helper()
		_, err := w.svc.Authenticate(ctx, tok)
		if want && err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !want && !errors.Is(err, auth.ErrUnauthenticated) {
			t.Fatalf("%s: accepted (%v)", name, err)
		}
	}
	for range 2 {
		accepted("the login's token", short, true)
		accepted("a long-lived token", long, true)
	}
	// One byte of the signature changed (not the last character, whose low bits base64 ignores).
	i := len(short) - 5
	tampered := short[:i] + string("AB"[map[bool]int{true: 1}[short[i] == 'A']]) + short[i+1:]
	accepted("the remembered token with its signature changed", tampered, false)
	accepted("the login's token, after a changed copy was refused", short, true)

	w.clock.Add(2*time.Minute + time.Second)
	accepted("the login's token once expired", short, false)
	accepted("a long-lived token after two minutes", long, true)

	// A day later a new key signs; the old one checks its tokens for one token lifetime more.
	w.clock.Add(24 * time.Hour)
	if _, err := w.svc.Login(ctx, "alice", pw, "", ""); err != nil {
		t.Fatal(err)
	}
	if keys, _ := w.v.SigningKeys(ctx, auth.PurposeToken); len(keys) != 2 {
		t.Fatalf("%d signing keys after a day", len(keys))
	}
	accepted("a token of the previous key, just after rotation", long, true)
	w.clock.Add(2*time.Minute + time.Second)
	accepted("a token of a retired key, unexpired and remembered", long, false)
}

// TestLockoutCannotBeRaced: many logins at once for one name — from many addresses, the right
// password among wrong ones — and from one address, on both databases: no more guesses are checked
// than the limits allow, whatever the concurrency, because each attempt is counted before its
// password is checked.
func TestLockoutCannotBeRaced(t *testing.T) {
	testenv.ForEachDatabase(t, func(t *testing.T, d testenv.Database) {
		ctx := context.Background()
		w := newWorld(t, d) // max_failures 3, ip_max_failures 5
		pw := secret.New("a long enough password")
		if _, err := w.svc.AddUser(ctx, "cli:test", "alice", auth.RoleAuditor, nil, pw); err != nil {
			t.Fatal(err)
		}
		count := func(n int, attempt func(i int) error) map[string]int {
			var mu sync.Mutex
			got := map[string]int{}
			var wg sync.WaitGroup
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					err := attempt(i)
					kind := "ok"
					var locked *auth.LockedError
					switch {
					case errors.As(err, &locked):
						kind = "locked"
					case errors.Is(err, auth.ErrUnauthenticated):
						kind = "wrong"
					case err != nil:
						kind = err.Error()
					}
					mu.Lock()
					got[kind]++
					mu.Unlock()
				}()
			}
			wg.Wait()
			return got
		}
		// 40 addresses, one name, all wrong: at most 3 guesses are checked.
		got := count(40, func(i int) error {
			_, err := w.svc.Login(ctx, "bob", secret.New("wrong password number "+fmt.Sprint(i)), "", fmt.Sprintf("198.51.100.%d", i+1))
			return err
		})
		if got["wrong"] > 3 || got["wrong"]+got["locked"] != 40 {
			t.Fatalf("40 racing wrong logins for one name: %v (at most 3 may be checked)", got)
		}
		// 40 addresses, one name: 39 wrong passwords and the right one. The right one, if it gets a
		// place, restarts the count of failures in a row (as a login that works does), so at most
		// 3 wrong guesses are checked before it and 3 after: never the 39 of the attack.
		got = count(40, func(i int) error {
			p := secret.New("wrong password number " + fmt.Sprint(i))
			if i == 20 {
				p = pw
			}
			_, err := w.svc.Login(ctx, "alice", p, "", fmt.Sprintf("203.0.113.%d", i+1))
			return err
		})
		if got["wrong"] > 6 || got["wrong"]+got["ok"]+got["locked"] != 40 {
			t.Fatalf("40 racing logins for one name: %v (at most 3 wrong guesses may be checked, 3 more after a success)", got)
		}
		// One address, many names: at most five guesses.
		got = count(80, func(i int) error {
			_, err := w.svc.Login(ctx, fmt.Sprintf("user%d", i), secret.New("wrong password here"), "", "192.0.2.66")
			return err
		})
		if got["wrong"] > 5 || got["wrong"]+got["locked"] != 80 {
			t.Fatalf("80 racing logins from one address: %v (at most 5 may be checked)", got)
		}
	})
}

// TestPasswordHashesBounded: 200 logins at once with made-up names, each an Argon2id hash of 19 MiB,
// keep the heap within the bound of hashes computed at once (two here) plus a margin; those that find
// no place are turned away with ErrBusy before any hashing.
func TestPasswordHashesBounded(t *testing.T) {
	ctx := context.Background()
	db := storetest.Open(t, testenv.Database{Driver: "sqlite", DSN: t.TempDir() + "/k.db"})
	cfg := testConfig()
	cfg.Argon2 = auth.DefaultArgon2 // 19 MiB a hash
	cfg.MaxConcurrentHashes = 2
	cfg.Lockout = auth.Lockout{Duration: time.Minute}
	svc, err := auth.New(cfg, db.Auth(), storetest.Vault(t, db, nil), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	var peak atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		var m runtime.MemStats
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			runtime.ReadMemStats(&m)
			if m.HeapAlloc > peak.Load() {
				peak.Store(m.HeapAlloc)
			}
		}
	}()
	var busy, refused atomic.Int64
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := svc.Login(ctx, fmt.Sprintf("nobody%d", i), secret.New("wrong password here"), "", fmt.Sprintf("10.1.%d.%d", i/250, i%250))
			var b *auth.BusyError
			switch {
			case errors.As(err, &b) && b.RetryAfter > 0:
				busy.Add(1)
			case errors.Is(err, auth.ErrUnauthenticated):
				refused.Add(1)
			default:
				t.Errorf("login %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-sampled
	// The collector lets the heap reach twice what is live before it runs (GOGC=100): the bound is
	// twice the hashes' budget, plus a margin for everything else.
	const budget, margin = 2 * 19 << 20, 24 << 20
	grew := int64(peak.Load()) - int64(before.HeapAlloc)
	t.Logf("200 logins: %d checked, %d turned away; heap grew by at most %d MiB", refused.Load(), busy.Load(), grew>>20)
	if grew > 2*budget+margin {
		t.Fatalf("the heap grew by %d MiB with 2 hashes of 19 MiB allowed at once", grew>>20)
	}
	if busy.Load() == 0 || refused.Load() == 0 {
		t.Fatalf("checked %d, turned away %d: want both", refused.Load(), busy.Load())
	}
}

// countingKEK counts the calls to a key-encryption key that open data keys (AWS KMS Decrypt calls).
type countingKEK struct {
	vault.KEK
	unwraps atomic.Int64
}

func (c *countingKEK) Unwrap(ctx context.Context, wrapped, aad []byte) ([]byte, error) {
	c.unwraps.Add(1)
	return c.KEK.Unwrap(ctx, wrapped, aad)
}

// TestSigningKeyOpenedOnce: tokens are checked with public keys only, and the newest private key is
// opened once — one call to the KEK, shared by concurrent signers — and kept until it changes.
func TestSigningKeyOpenedOnce(t *testing.T) {
	ctx := context.Background()
	db := storetest.Open(t, testenv.Database{Driver: "sqlite", DSN: t.TempDir() + "/k.db"})
	local, err := vault.NewLocalKEK(vault.GenerateKeyMaterial())
	if err != nil {
		t.Fatal(err)
	}
	kek := &countingKEK{KEK: local}
	v, err := vault.New(ctx, db.Vault(), storetest.GuardKEK(t, kek))
	if err != nil {
		t.Fatal(err)
	}
	first := auth.NewTokens(v, "https://keyward.test", "keyward", time.Minute, 24*time.Hour, nil)
	tok, _, err := first.Issue(ctx, "user:alice", 1, false) // makes the first key, and keeps it opened
	if err != nil {
		t.Fatal(err)
	}
	// Another replica: it checks the token without opening anything, and opens the key once to sign.
	second := auth.NewTokens(v, "https://keyward.test", "keyward", time.Minute, 24*time.Hour, nil)
	before := kek.unwraps.Load()
	if _, err := second.Parse(ctx, tok); err != nil {
		t.Fatal(err)
	}
	if n := kek.unwraps.Load() - before; n != 0 {
		t.Fatalf("checking a token opened %d keys", n)
	}
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if _, _, err := second.Issue(ctx, "user:bob", 1, false); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := kek.unwraps.Load() - before; n != 1 {
		t.Fatalf("20 tokens signed at once opened the key %d times, want once", n)
	}
	for range 5 {
		if _, _, err := first.Issue(ctx, "user:carol", 1, false); err != nil {
			t.Fatal(err)
		}
	}
	if n := kek.unwraps.Load() - before; n != 1 {
		t.Fatalf("a key made here is kept opened: %d openings", n)
	}
}
