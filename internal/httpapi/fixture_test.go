package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/pquerna/otp/totp"

	"github.com/keyward/keyward/internal/access"
	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/auth"
	"github.com/keyward/keyward/internal/cloud"
	"github.com/keyward/keyward/internal/cloud/sim"
	"github.com/keyward/keyward/internal/httpapi"
	"github.com/keyward/keyward/internal/metrics"
	"github.com/keyward/keyward/internal/report"
	"github.com/keyward/keyward/internal/rotation"
	"github.com/keyward/keyward/internal/secret"
	"github.com/keyward/keyward/internal/store"
	"github.com/keyward/keyward/internal/store/storetest"
	"github.com/keyward/keyward/internal/testenv"
	"github.com/keyward/keyward/internal/vault"
)

const account = "123456789012"

var password = secret.New("a long enough password")

// fixture is a Keyward API over a real database and the simulated cloud, with a principal of every
// kind signed in.
type fixture struct {
	t      testing.TB
	db     *store.DB
	vault  *vault.Vault
	svc    *auth.Service
	cloud  *sim.Cloud
	trail  *audit.Trail
	api    *httpapi.API
	srv    *httptest.Server
	logs   *testenv.SyncBuffer
	creds  map[string]http.Header // principal → the headers it authenticates with
	seeds  map[string]string      // user → TOTP seed
	engine *rotation.Engine
	clock  *totpClock // the auth service's
}

// totpClock is the auth service's clock in these tests: real time, moved on by one TOTP step before
// every login with a code, so that each login has a code of its own (a code signs in once).
type totpClock struct{ offset atomic.Int64 }

func (c *totpClock) Now() time.Time { return time.Now().Add(time.Duration(c.offset.Load())) }

// nextStep moves the clock on by one TOTP step and returns the new time.
func (c *totpClock) nextStep() time.Time {
	c.offset.Add(int64(30 * time.Second))
	return c.Now()
}

func testAuthConfig() auth.Config {
	return auth.Config{Argon2: auth.Argon2Params{MemoryKiB: 64, Iterations: 1, Parallelism: 1},
		RequireMFA: []auth.Role{auth.RoleAdmin, auth.RoleMember}, Issuer: "https://keyward.test", Audience: "keyward",
		TokenTTL: 12 * time.Hour, KeyRotation: 24 * time.Hour, // long enough for the clock's TOTP shifts (see totpClock)
		Lockout: auth.Lockout{MaxFailures: 3, IPMaxFailures: 100, Duration: time.Minute, Delay: time.Millisecond, MaxDelay: 2 * time.Millisecond}}
}

// newFixture starts the API on d; adjust may change the API's settings before it serves.
func newFixture(t testing.TB, d testenv.Database, adjust func(*httpapi.API)) *fixture {
	t.Helper()
	ctx := context.Background()
	db := storetest.Open(t, d)
	v := storetest.Vault(t, db, nil)
	logs := &testenv.SyncBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	trail := audit.New(db.Audit(), nil, log)
	clock := &totpClock{}
	cfg := testAuthConfig()
	cfg.AccountManaged = func(_ context.Context, id string) (bool, error) { return id == account, nil }
	svc, err := auth.New(cfg, db.Auth(), v, trail, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	c := sim.New()
	for _, u := range []string{"payments-app", "search-app", "legacy-app"} {
		c.AddUser(account, u, "/", nil)
	}
	// legacy-app holds a key that predates Keyward and whose secret Keyward never saw.
	c.AddKey(account, "legacy-app", time.Now().Add(-24*time.Hour), cloud.KeyActive)
	engine := rotation.New(rotation.Engine{Cloud: storetest.GuardCloud(t, c), Vault: v, Store: db.Rotations(), Owner: "test", Log: log, Audit: trail,
		Leaks:          db.Leaks(),
		Policy:         rotation.Policy{RotateAfter: 90 * 24 * time.Hour, DeactivateAfter: 0, DeleteAfter: time.Hour, VerifyTimeout: 10 * time.Second},
		VerifyInterval: time.Millisecond})
	f := &fixture{t: t, db: db, vault: v, svc: svc, cloud: c, trail: trail, logs: logs, engine: engine, clock: clock,
		creds: map[string]http.Header{}, seeds: map[string]string{}}
	f.api = &httpapi.API{Auth: svc, Vault: v, Trail: trail, Version: "test",
		Access: &access.Service{Auth: svc, Vault: v, Engine: engine, Audit: trail}, Inventory: db.Inventory(),
		Reports: &report.Service{Inventory: db.Inventory(), Snapshots: db.Inventory(), Trail: trail, Rotations: db.Rotations(), Vault: v, Policy: engine.Policy}}
	if adjust != nil {
		adjust(f.api)
	}
	m := metrics.New(metrics.Sources{})
	f.srv = httptest.NewServer(httpapi.Handler(httpapi.Options{Log: log, Metrics: m, API: f.api}))
	t.Cleanup(f.srv.Close)

	for _, team := range []string{"payments", "search", "legacy"} {
		if _, err := svc.AddTeam(ctx, "cli:test", auth.Team{Name: team,
			Identity: vault.Identity{Cloud: vault.CloudAWS, AccountID: account, UserName: team + "-app"}}); err != nil {
			t.Fatal(err)
		}
	}
	users := []struct {
		name  string
		role  auth.Role
		teams []string
		mfa   bool
	}{
		{"admin", auth.RoleAdmin, nil, true},
		{"admin-nomfa", auth.RoleAdmin, nil, false},
		{"operator", auth.RoleOperator, []string{"payments"}, false},
		{"auditor", auth.RoleAuditor, []string{"payments"}, false},
		{"member", auth.RoleMember, []string{"payments"}, true},
		{"member-nomfa", auth.RoleMember, []string{"payments"}, false},
		{"member-search", auth.RoleMember, []string{"search"}, true},
		{"disabled", auth.RoleAdmin, []string{"payments"}, false},
	}
	for _, u := range users {
		if _, err := svc.AddUser(ctx, "cli:test", u.name, u.role, u.teams, password); err != nil {
			t.Fatal(err)
		}
		if u.mfa {
			uri, err := svc.EnrollMFA(ctx, "cli:test", u.name)
			if err != nil {
				t.Fatal(err)
			}
			f.seeds[u.name] = strings.SplitN(strings.SplitN(uri.Reveal(), "secret=", 2)[1], "&", 2)[0]
		}
		f.creds[u.name] = bearer(f.login(u.name))
	}
	if err := svc.DisableUser(ctx, "cli:test", "disabled"); err != nil {
		t.Fatal(err)
	}
	_, key, err := svc.CreateAPIKey(ctx, "cli:test", "ci", auth.RoleMember, []string{"payments"}, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.creds["apikey"] = http.Header{"X-Api-Key": {key.Reveal()}}
	_, revoked, err := svc.CreateAPIKey(ctx, "cli:test", "old-ci", auth.RoleAdmin, []string{"payments"}, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.RevokeAPIKey(ctx, "cli:test", "old-ci"); err != nil {
		t.Fatal(err)
	}
	f.creds["revoked-apikey"] = http.Header{"X-Api-Key": {revoked.Reveal()}}
	_, far, err := svc.CreateAPIKey(ctx, "cli:test", "far-ci", auth.RoleAdmin, []string{"payments"},
		[]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.creds["outside-cidr"] = http.Header{"X-Api-Key": {far.Reveal()}}
	f.forgeTokens()
	return f
}

func bearer(token string) http.Header { return http.Header{"Authorization": {"Bearer " + token}} }

// login logs a user in through the API (with a TOTP code when it has a seed) and returns the token.
func (f *fixture) login(name string) string {
	f.t.Helper()
	body := map[string]string{"username": name, "password": password.Reveal()}
	if seed := f.seeds[name]; seed != "" {
		code, err := totp.GenerateCode(seed, f.clock.nextStep())
		if err != nil {
			f.t.Fatal(err)
		}
		body["totp"] = code
	}
	status, resp := f.do("POST", "/v1/auth/login", nil, body)
	if status != http.StatusOK {
		f.t.Fatalf("login %s: %d %s", name, status, resp)
	}
	var tok struct{ Token string }
	if err := json.Unmarshal(resp, &tok); err != nil || tok.Token == "" {
		f.t.Fatalf("login %s: %s", name, resp)
	}
	return tok.Token
}

// forgeTokens makes the tokens an attacker or a mistake would present.
func (f *fixture) forgeTokens() {
	f.t.Helper()
	ctx := context.Background()
	keys, err := f.vault.SigningKeys(ctx, auth.PurposeToken)
	if err != nil || len(keys) == 0 {
		f.t.Fatalf("token keys: %v", err)
	}
	key := keys[len(keys)-1]
	now := f.clock.Now()
	claims := func(mod func(jwt.MapClaims)) jwt.MapClaims {
		c := jwt.MapClaims{"iss": "https://keyward.test", "aud": "keyward", "sub": "user:admin", "gen": 1, "mfa": true,
			"exp": now.Add(time.Hour).Unix(), "nbf": now.Unix(), "iat": now.Unix()}
		mod(c)
		return c
	}
	sign := func(method jwt.SigningMethod, k any, c jwt.MapClaims) string {
		tok := jwt.NewWithClaims(method, c)
		tok.Header["kid"] = key.ID
		s, err := tok.SignedString(k)
		if err != nil {
			f.t.Fatal(err)
		}
		return s
	}
	f.creds["expired"] = bearer(sign(jwt.SigningMethodEdDSA, key.Signer(), claims(func(c jwt.MapClaims) {
		c["exp"], c["nbf"] = now.Add(-time.Minute).Unix(), now.Add(-3*time.Minute).Unix()
	})))
	f.creds["other-audience"] = bearer(sign(jwt.SigningMethodEdDSA, key.Signer(), claims(func(c jwt.MapClaims) { c["aud"] = "another-service" })))
	f.creds["alg-none"] = bearer(sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims(func(jwt.MapClaims) {})))
	f.creds["hs256-public-key"] = bearer(sign(jwt.SigningMethodHS256, []byte(key.Public), claims(func(jwt.MapClaims) {})))
	// Another Keyward instance: its own database, vault and token key, the same issuer and audience.
	odb := storetest.Open(f.t, testenv.Database{Driver: "sqlite", DSN: f.t.TempDir() + "/other2.db"})
	osvc, err := auth.New(testAuthConfig(), odb.Auth(), storetest.Vault(f.t, odb, nil), nil, nil)
	if err != nil {
		f.t.Fatal(err)
	}
	if _, err := osvc.AddUser(ctx, "cli:test", "admin", auth.RoleAdmin, nil, password); err != nil {
		f.t.Fatal(err)
	}
	otok, err := osvc.Login(ctx, "admin", password, "", "")
	if err != nil {
		f.t.Fatal(err)
	}
	f.creds["other-instance"] = bearer(otok.Token.Reveal())
}

// do sends a request with headers h and a JSON body (nil: none) and returns the status and body.
func (f *fixture) do(method, path string, h http.Header, body any) (int, []byte) {
	f.t.Helper()
	resp := f.send(method, path, h, body)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		f.t.Fatal(err)
	}
	return resp.StatusCode, raw
}

func (f *fixture) send(method, path string, h http.Header, body any) *http.Response {
	f.t.Helper()
	var rd io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			f.t.Fatal(err)
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, f.srv.URL+path, rd)
	if err != nil {
		f.t.Fatal(err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	return resp
}

// waitRotation polls a rotation until it finishes and returns its status.
func (f *fixture) waitRotation(id int64, h http.Header) string {
	f.t.Helper()
	for range 500 {
		status, body := f.do("GET", "/v1/rotations/"+itoa(id), h, nil)
		if status != http.StatusOK {
			f.t.Fatalf("rotation %d: %d %s", id, status, body)
		}
		var r struct{ Status string }
		_ = json.Unmarshal(body, &r)
		if r.Status != "running" {
			return r.Status
		}
		time.Sleep(10 * time.Millisecond)
	}
	f.t.Fatalf("rotation %d did not finish", id)
	return ""
}
