package httpapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/auth"
	"github.com/keyward/keyward/internal/cloud"
	"github.com/keyward/keyward/internal/delivery"
	"github.com/keyward/keyward/internal/httpapi"
	"github.com/keyward/keyward/internal/rotation"
	"github.com/keyward/keyward/internal/store/storetest"
	"github.com/keyward/keyward/internal/testenv"
	"github.com/keyward/keyward/internal/vault"
)

type credDoc struct {
	Version         int
	AccessKeyID     string `json:"AccessKeyId"`
	SecretAccessKey string
	Expiration      string
}

func (f *fixture) credentials(team string, h http.Header) (int, credDoc, []byte) {
	f.t.Helper()
	status, body := f.do("GET", "/v1/teams/"+team+"/credentials", h, nil)
	var c credDoc
	if status == http.StatusOK {
		if err := json.Unmarshal(body, &c); err != nil {
			f.t.Fatalf("credentials of %s: %s", team, body)
		}
	}
	return status, c, body
}

// TestCredentialsRotateAndAudit: a team's first key is made on first access, formats, a rotation
// through the API, the audit trail of it all, and no secret in any log line or audit record.
func TestCredentialsRotateAndAudit(t *testing.T) {
	testenv.ForEachDatabase(t, func(t *testing.T, d testenv.Database) {
		f := newFixture(t, d, nil)
		status, first, body := f.credentials("payments", f.creds["member"])
		if status != http.StatusOK || !strings.HasPrefix(first.AccessKeyID, "AKIA") || len(first.SecretAccessKey) != 40 {
			t.Fatalf("first access: %d %s", status, body)
		}
		exp, err := time.Parse(time.RFC3339, first.Expiration)
		if err != nil || time.Until(exp) < 89*24*time.Hour {
			t.Fatalf("expiration %q: %v", first.Expiration, err)
		}
		// The key is the one the cloud holds, and it works there.
		keys := f.cloud.Keys(account, "payments-app")
		if len(keys) != 1 || keys[0].ID != first.AccessKeyID || keys[0].Secret.Reveal() != first.SecretAccessKey {
			t.Fatalf("cloud holds %+v", keys)
		}
		// The API key of the same team reads the same key.
		if _, again, _ := f.credentials("payments", f.creds["apikey"]); again.AccessKeyID != first.AccessKeyID {
			t.Fatalf("second read: %s, want %s", again.AccessKeyID, first.AccessKeyID)
		}
		// Formats.
		for format, want := range map[string][]string{
			"credential-process": {`"Version":1`, `"AccessKeyId":"` + first.AccessKeyID, `"Expiration":"`},
			"env":                {"AWS_ACCESS_KEY_ID=" + first.AccessKeyID + "\n", "AWS_SECRET_ACCESS_KEY=" + first.SecretAccessKey},
			"ini":                {"[payments]\naws_access_key_id = " + first.AccessKeyID},
		} {
			status, body := f.do("GET", "/v1/teams/payments/credentials?format="+format, f.creds["member"], nil)
			for _, w := range want {
				if status != 200 || !strings.Contains(string(body), w) {
					t.Errorf("format %s: %d %s, want %q", format, status, body, w)
				}
			}
		}

		// An operator rotates; the new key is handed out once promoted, the old one stays active.
		status, body = f.do("POST", "/v1/teams/payments/rotate", f.creds["operator"], nil)
		var started struct {
			RotationID int64 `json:"rotation_id"`
		}
		if status != http.StatusAccepted || json.Unmarshal(body, &started) != nil || started.RotationID == 0 {
			t.Fatalf("rotate: %d %s", status, body)
		}
		if s := f.waitRotation(started.RotationID, f.creds["operator"]); s != "rotated" {
			t.Fatalf("rotation ended %s", s)
		}
		_, second, _ := f.credentials("payments", f.creds["member"])
		if second.AccessKeyID == first.AccessKeyID {
			t.Fatal("the same key after a rotation")
		}
		if ks := f.cloud.Keys(account, "payments-app"); len(ks) != 2 || ks[0].Status != "Active" || ks[1].Status != "Active" {
			t.Fatalf("after rotation the cloud holds %+v", ks)
		}

		// Export: admin with MFA, every team with a key.
		status, body = f.do("GET", "/v1/export", f.creds["admin"], nil)
		if status != 200 || !strings.Contains(string(body), second.AccessKeyID) || strings.Contains(string(body), "legacy") {
			t.Fatalf("export: %d %s", status, body)
		}

		// The audit trail, through the API: reads, with who, which team, which key, from where.
		status, body = f.do("GET", "/v1/audit?action=key.read&limit=2", f.creds["auditor"], nil)
		var page struct {
			Records []struct {
				Seq                   int64
				Actor, Action, Target string
				SourceIP              string `json:"source_ip"`
				RequestID             string `json:"request_id"`
				Detail                map[string]string
			}
			NextAfter int64 `json:"next_after"`
		}
		if status != 200 || json.Unmarshal(body, &page) != nil || len(page.Records) != 2 || page.NextAfter == 0 {
			t.Fatalf("audit page: %d %s", status, body)
		}
		r := page.Records[0]
		if r.Actor != "user:member" || r.Detail["team"] != "payments" || r.Detail["access_key_id"] != first.AccessKeyID ||
			r.Target != (vault.Identity{Cloud: "aws", AccountID: account, UserName: "payments-app"}).String() ||
			r.SourceIP != "127.0.0.1" || r.RequestID == "" {
			t.Fatalf("first read recorded as %+v", r)
		}
		status, body = f.do("GET", "/v1/audit?action=key.read&limit=1000&after="+itoa(page.NextAfter), f.creds["auditor"], nil)
		var rest struct{ Records []struct{ Actor string } }
		// Seven reads in all: the member's first, the API key's, three formats, one after the
		// rotation, the export's of payments (search has no key yet, legacy's secret is unknown).
		if status != 200 || json.Unmarshal(body, &rest) != nil || len(rest.Records) != 5 {
			t.Fatalf("second page: %d %s", status, body)
		}
		status, body = f.do("GET", "/v1/audit?action=auth.&actor=user:operator", f.creds["admin"], nil)
		if status != 200 || !strings.Contains(string(body), `"action":"auth.login"`) {
			t.Fatalf("operator's logins: %d %s", status, body)
		}

		// No secret anywhere it must not be: log lines, audit records.
		_, all := f.do("GET", "/v1/audit?limit=1000", f.creds["auditor"], nil)
		for _, s := range []string{first.SecretAccessKey, second.SecretAccessKey, password.Reveal()} {
			if strings.Contains(f.logs.String(), s) {
				t.Errorf("a secret is in the logs")
			}
			if strings.Contains(string(all), s) {
				t.Errorf("a secret is in the audit trail")
			}
		}
	})
}

// TestTeamIsolation: a member of one team never gets another team's key, whatever the path says.
func TestTeamIsolation(t *testing.T) {
	f := newFixture(t, testenv.Database{Driver: "sqlite", DSN: t.TempDir() + "/k.db"}, nil)
	_, search, _ := f.credentials("search", f.creds["member-search"])
	if search.AccessKeyID == "" {
		t.Fatal("search has no key")
	}
	for _, path := range []string{
		"search", "Search", "SEARCH", "search%00", "search%2F", "%73earch", "payments%2F..%2Fsearch", "payments/../search",
		"./search", "search%20", "%20search", "sea%72ch", "search;payments", "search?x=payments", "3", "0",
		"payments%2Fsearch", "..%2Fsearch", "payments/..%2Fsearch", "s%65arch", "search%23",
	} {
		resp := f.send("GET", "/v1/teams/"+path+"/credentials", f.creds["member"], nil)
		var raw strings.Builder
		buf := make([]byte, 4096)
		for {
			n, err := resp.Body.Read(buf)
			raw.Write(buf[:n])
			if err != nil {
				break
			}
		}
		resp.Body.Close()
		if strings.Contains(raw.String(), search.AccessKeyID) || strings.Contains(raw.String(), search.SecretAccessKey) {
			t.Fatalf("%s: a member of payments got search's key", path)
		}
		if resp.StatusCode == http.StatusOK && !strings.HasPrefix(path, "payments") {
			t.Errorf("%s: 200", path)
		}
	}
}

func prefixes(cidrs ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, c := range cidrs {
		out = append(out, netip.MustParsePrefix(c))
	}
	return out
}

// reserve serves the (changed) API anew, logging to the fixture's log.
func (f *fixture) reserve() *httptest.Server {
	srv := httptest.NewServer(httpapi.Handler(httpapi.Options{API: f.api, Log: slog.New(slog.NewJSONHandler(f.logs, nil))}))
	f.t.Cleanup(srv.Close)
	return srv
}

func TestNetworkRulesAndRateLimits(t *testing.T) {
	t.Run("allowlist", func(t *testing.T) {
		f := newFixture(t, testenv.Database{Driver: "sqlite", DSN: t.TempDir() + "/k.db"}, nil)
		f.api.AllowedCIDRs = prefixes("10.0.0.0/8")
		f.srv = f.reserve()
		status, body := f.do("GET", "/healthz", nil, nil)
		if status != 403 || !strings.Contains(string(body), "127.0.0.1") {
			t.Fatalf("from outside the allowlist: %d %s", status, body)
		}
	})
	t.Run("proxies", func(t *testing.T) {
		f := newFixture(t, testenv.Database{Driver: "sqlite", DSN: t.TempDir() + "/k.db"}, func(a *httpapi.API) {
			a.AllowedCIDRs = prefixes("10.0.0.0/8", "127.0.0.1/32")
			a.TrustedProxies = prefixes("127.0.0.1/32")
		})
		h := http.Header{"X-Forwarded-For": {"192.0.2.7, 10.1.2.3"}}
		if status, _ := f.do("GET", "/healthz", h, nil); status != 200 {
			t.Fatalf("through a trusted proxy from 10.1.2.3: %d", status)
		}
		h = http.Header{"X-Forwarded-For": {"10.1.2.3, 192.0.2.7"}}
		if status, body := f.do("GET", "/healthz", h, nil); status != 403 || !strings.Contains(string(body), "192.0.2.7") {
			t.Fatalf("through a trusted proxy from 192.0.2.7: %d %s", status, body)
		}
		// The address the audit trail records is the client's, not the proxy's.
		h = f.creds["member"].Clone()
		h.Set("X-Forwarded-For", "10.9.8.7")
		if status, body := f.do("GET", "/v1/teams/payments/credentials", h, nil); status != 200 {
			t.Fatalf("read through the proxy: %d %s", status, body)
		}
		_, body := f.do("GET", "/v1/audit?action=key.read", f.creds["auditor"], nil)
		if !strings.Contains(string(body), `"source_ip":"10.9.8.7"`) {
			t.Fatalf("audit: %s", body)
		}
	})
	t.Run("untrusted X-Forwarded-For", func(t *testing.T) {
		f := newFixture(t, testenv.Database{Driver: "sqlite", DSN: t.TempDir() + "/k.db"}, func(a *httpapi.API) {
			a.AllowedCIDRs = prefixes("127.0.0.1/32")
		})
		if status, _ := f.do("GET", "/healthz", http.Header{"X-Forwarded-For": {"10.1.2.3"}}, nil); status != 200 {
			t.Fatalf("a forged X-Forwarded-For from a non-proxy changed the address: %d", status)
		}
	})
	t.Run("rate limits", func(t *testing.T) {
		f := newFixture(t, testenv.Database{Driver: "sqlite", DSN: t.TempDir() + "/k.db"}, nil)
		f.api.RatePerPrincipal = 1 // takes effect on a new handler: build one
		srv := f.srv
		f.srv = f.reserve()
		defer func() { f.srv = srv }()
		codes := map[int]int{}
		var retry string
		for range 4 {
			resp := f.send("GET", "/v1/me", f.creds["auditor"], nil)
			codes[resp.StatusCode]++
			if resp.StatusCode == 429 {
				retry = resp.Header.Get("Retry-After")
			}
			resp.Body.Close()
		}
		if codes[200] != 2 || codes[429] != 2 || retry != "1" {
			t.Fatalf("4 requests at 1/s (bursts of 2): %v, Retry-After %q", codes, retry)
		}
		// Another principal has its own budget.
		if status, _ := f.do("GET", "/v1/me", f.creds["operator"], nil); status != 200 {
			t.Fatalf("another principal: %d", status)
		}
	})
	t.Run("login lockout", func(t *testing.T) {
		f := newFixture(t, testenv.Database{Driver: "sqlite", DSN: t.TempDir() + "/k.db"}, nil)
		var statuses []int
		var retry string
		for range 4 {
			resp := f.send("POST", "/v1/auth/login", nil, map[string]string{"username": "operator", "password": "wrong password!"})
			statuses = append(statuses, resp.StatusCode)
			retry = resp.Header.Get("Retry-After")
			resp.Body.Close()
		}
		if len(statuses) != 4 || statuses[0] != 401 || statuses[2] != 401 || statuses[3] != 429 || retry == "" {
			t.Fatalf("statuses %v, Retry-After %q", statuses, retry)
		}
	})
}

// TestMFAGuardsEveryWayToASecret: an admin signed in without a second factor, refused a team's key,
// cannot get one another way either — no API key, user, team or membership of its making — and an
// admin API key reads only its own teams' keys and administers nothing while admins need MFA.
func TestMFAGuardsEveryWayToASecret(t *testing.T) {
	f := newFixture(t, testenv.Database{Driver: "sqlite", DSN: t.TempDir() + "/k.db"}, nil)
	nomfa := f.creds["admin-nomfa"]
	for _, c := range []struct {
		method, path string
		body         any
	}{
		{"GET", "/v1/teams/payments/credentials", nil},
		{"POST", "/v1/apikeys", map[string]any{"name": "sneaky", "role": "admin"}},
		{"POST", "/v1/users", map[string]any{"name": "sneaky", "role": "operator", "teams": []string{"payments"}, "password": password.Reveal()}},
		{"POST", "/v1/teams", map[string]any{"name": "sneaky", "iam_user": "payments-app2", "account_id": account}},
		{"POST", "/v1/teams/payments/members", map[string]string{"member": "user:admin-nomfa"}},
		{"GET", "/v1/export", nil},
	} {
		status, body := f.do(c.method, c.path, nomfa, c.body)
		if status != http.StatusForbidden || !strings.Contains(string(body), "mfa-required") {
			t.Errorf("admin without MFA: %s %s: %d %s", c.method, c.path, status, body)
		}
	}
	ctx := context.Background()
	_, adminKey, err := f.svc.CreateAPIKey(ctx, "cli:test", "admin-ci", auth.RoleAdmin, nil, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, teamKey, err := f.svc.CreateAPIKey(ctx, "cli:test", "admin-ci-payments", auth.RoleAdmin, []string{"payments"}, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	ak := http.Header{"X-Api-Key": {adminKey.Reveal()}}
	for path, want := range map[string]int{"/v1/teams/payments/credentials": 403, "/v1/teams/search/credentials": 403, "/v1/export": 403,
		"/v1/users": 403, "/v1/keys": 200, "/v1/audit": 200} {
		if status, body := f.do("GET", path, ak, nil); status != want {
			t.Errorf("admin API key without teams: GET %s: %d %s, want %d", path, status, body, want)
		}
	}
	if status, body := f.do("POST", "/v1/apikeys", ak, map[string]any{"name": "sneaky2", "role": "member", "teams": []string{"payments"}}); status != 403 {
		t.Errorf("admin API key creates an API key: %d %s", status, body)
	}
	if status, body := f.do("GET", "/v1/teams/payments/credentials", http.Header{"X-Api-Key": {teamKey.Reveal()}}, nil); status != 200 {
		t.Errorf("admin API key of team payments: %d %s", status, body)
	}
	if status, body := f.do("GET", "/v1/teams/search/credentials", http.Header{"X-Api-Key": {teamKey.Reveal()}}, nil); status != 403 {
		t.Errorf("admin API key of team payments reads search: %d %s", status, body)
	}
	if status, body := f.do("POST", "/v1/apikeys", f.creds["admin"], map[string]any{"name": "fine", "role": "member"}); status != 201 {
		t.Errorf("admin with MFA: %d %s", status, body)
	}
}

// flaky is a cloud that stops answering when down is set, with an error whose text is what an SDK
// would say of an unreachable endpoint: nothing a caller of the API may see.
type flaky struct {
	cloud.Provider
	down atomic.Bool
}

const unreachable = "dial tcp 10.9.9.9:443: i/o timeout (iam.internal-endpoint.example, request id 7f3e-secret-ish)"

func (f *flaky) GetUser(ctx context.Context, account, user string) (cloud.User, error) {
	if f.down.Load() {
		return cloud.User{}, errors.New(unreachable)
	}
	return f.Provider.GetUser(ctx, account, user)
}

// TestCloudDownIsA503WithAPublicMessage: when the cloud does not answer, a team's first read and a
// rotation are 503 with Retry-After and Keyward's own words; the cloud's text goes to the log under
// the request's id, never to the caller.
func TestCloudDownIsA503WithAPublicMessage(t *testing.T) {
	var fl *flaky
	f := newFixture(t, testenv.Database{Driver: "sqlite", DSN: t.TempDir() + "/k.db"}, func(a *httpapi.API) {
		fl = &flaky{Provider: a.Access.Engine.Cloud}
		a.Access.Engine.Cloud = fl
	})
	fl.down.Store(true)
	for _, c := range []struct{ method, path string }{
		{"GET", "/v1/teams/search/credentials"},
		{"POST", "/v1/teams/payments/rotate"},
	} {
		h := f.creds["admin"].Clone()
		h.Set("X-Request-Id", "req-"+strings.ReplaceAll(c.path, "/", "-"))
		resp := f.send(c.method, c.path, h, nil)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" ||
			!strings.Contains(string(body), "try again later") || strings.Contains(string(body), "10.9.9.9") ||
			strings.Contains(string(body), "secret-ish") || strings.Contains(string(body), "dial tcp") {
			t.Errorf("%s %s with the cloud down: %d %s", c.method, c.path, resp.StatusCode, body)
		}
		if !strings.Contains(f.logs.String(), h.Get("X-Request-Id")) || !strings.Contains(f.logs.String(), "10.9.9.9") {
			t.Errorf("the log does not hold the cause under request id %s", h.Get("X-Request-Id"))
		}
	}
}

// TestRotateAnswers202WithTheOpenRotation: a rotation already open for the team's identity — held
// by another replica, or interrupted here — is answered at once with 202 and that rotation's id.
func TestRotateAnswers202WithTheOpenRotation(t *testing.T) {
	f := newFixture(t, testenv.Database{Driver: "sqlite", DSN: t.TempDir() + "/k.db"}, nil)
	ctx := context.Background()
	if status, body := f.do("GET", "/v1/teams/search/credentials", f.creds["member-search"], nil); status != 200 {
		t.Fatalf("first key: %d %s", status, body)
	}
	id := vault.Identity{Cloud: vault.CloudAWS, AccountID: account, UserName: "search-app"}
	current, err := f.vault.Current(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	begin := func(owner string, lease time.Time) rotation.Record {
		var rec rotation.Record
		err := f.engine.Store.Atomically(ctx, func(ctx context.Context) error {
			var err error
			rec, err = f.engine.Store.Begin(ctx, rotation.Record{Identity: id, Step: rotation.StepCreate, Phase: rotation.PhaseStarted,
				OldKeyID: current.AccessKeyID, Attempt: 1, StartedAt: time.Now().UTC(), StepAt: time.Now().UTC()}, owner, lease)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return rec
	}
	rotate := func() (int, int64) {
		status, body := f.do("POST", "/v1/teams/search/rotate", f.creds["admin"], nil)
		var r struct {
			RotationID int64 `json:"rotation_id"`
		}
		_ = json.Unmarshal(body, &r)
		return status, r.RotationID
	}
	// Another replica holds it: 202 with its id, at once.
	held := begin("other-replica", time.Now().Add(time.Hour))
	if status, got := rotate(); status != http.StatusAccepted || got != held.ID {
		t.Fatalf("a rotation held elsewhere: %d, rotation %d, want 202 and %d", status, got, held.ID)
	}
	// Its lease runs out: this replica resumes it, and answers 202 with the same id.
	if err := f.engine.Store.Atomically(ctx, func(ctx context.Context) error {
		return f.engine.Store.Resume(ctx, held.ID, "other-replica", time.Now(), time.Now().Add(-time.Minute), "other-replica")
	}); err != nil {
		t.Fatal(err)
	}
	if status, got := rotate(); status != http.StatusAccepted || got != held.ID {
		t.Fatalf("a rotation resumed: %d, rotation %d, want 202 and %d", status, got, held.ID)
	}
	if s := f.waitRotation(held.ID, f.creds["admin"]); s != "rotated" {
		t.Fatalf("the resumed rotation ended %s", s)
	}
}

// TestRefusalsAreAudited: a 403 of an authenticated principal — another team's key, a missing
// second factor, an API key used from outside its networks — is an access.denied record with the
// principal, route, team and reason; a loop of refusals is recorded a bounded number of times, and
// what was dropped is counted in the next record.
func TestRefusalsAreAudited(t *testing.T) {
	f := newFixture(t, testenv.Database{Driver: "sqlite", DSN: t.TempDir() + "/k.db"}, nil)
	ctx := context.Background()
	denied := func(actor string) []audit.Record {
		recs, _, err := f.trail.Find(ctx, audit.Filter{Action: httpapi.ActionAccessDenied, Actor: actor, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		return recs
	}
	f.do("GET", "/v1/teams/payments/credentials", f.creds["member-nomfa"], nil)
	f.do("GET", "/v1/teams/payments/credentials", f.creds["outside-cidr"], nil)
	for who, want := range map[string]string{"user:member-nomfa": "mfa_required", "apikey:far-ci": "network"} {
		recs := denied(who)
		if len(recs) != 1 || recs[0].Detail["reason"] != want || recs[0].Detail["team"] != "payments" ||
			recs[0].Detail["route"] != "GET /v1/teams/{team}/credentials" || recs[0].Outcome != audit.Denied || recs[0].SourceIP == "" {
			t.Fatalf("%s refused: %+v", who, recs)
		}
	}
	const tries = 40
	for range tries {
		if status, _ := f.do("GET", "/v1/teams/payments/credentials", f.creds["member-search"], nil); status != http.StatusForbidden {
			t.Fatalf("another team's key: %d", status)
		}
	}
	recs := denied("user:member-search")
	if len(recs) < 10 || len(recs) >= tries || recs[0].Detail["reason"] != "forbidden" {
		t.Fatalf("%d refusals recorded %d times: want a bounded number (the burst, 10, and a few more)", tries, len(recs))
	}
	time.Sleep(1100 * time.Millisecond)
	f.do("GET", "/v1/teams/payments/credentials", f.creds["member-search"], nil)
	recs = denied("user:member-search")
	last := recs[len(recs)-1]
	dropped, _ := strconv.Atoi(last.Detail["dropped_before"])
	if dropped < 1 || len(recs)+dropped != tries+1 {
		t.Fatalf("after the loop: %d records, the last says %q dropped: want records + dropped = %d", len(recs), last.Detail["dropped_before"], tries+1)
	}
}

// TestAuditPagingPastTheEnd: a page after the last possible record number is empty, not the first.
func TestAuditPagingPastTheEnd(t *testing.T) {
	f := newFixture(t, testenv.Database{Driver: "sqlite", DSN: t.TempDir() + "/k.db"}, nil)
	status, body := f.do("GET", "/v1/audit?after=9223372036854775807", f.creds["auditor"], nil)
	var page struct{ Records []audit.Record }
	if err := json.Unmarshal(body, &page); status != 200 || err != nil || len(page.Records) != 0 {
		t.Fatalf("after the largest number: %d, %d records (%v)", status, len(page.Records), err)
	}
	if status, body := f.do("GET", "/v1/audit?after=9223372036854775808", f.creds["auditor"], nil); status != 400 {
		t.Fatalf("after a number too large: %d %s", status, body)
	}
}

// TestLastAdminStays: the last enabled admin can be neither deleted nor disabled.
func TestLastAdminStays(t *testing.T) {
	f := newFixture(t, testenv.Database{Driver: "sqlite", DSN: t.TempDir() + "/k.db"}, nil)
	if status, body := f.do("DELETE", "/v1/users/admin-nomfa", f.creds["admin"], nil); status != http.StatusNoContent {
		t.Fatalf("delete another admin: %d %s", status, body)
	}
	status, body := f.do("DELETE", "/v1/users/admin", f.creds["admin"], nil)
	if status != http.StatusConflict || !strings.Contains(string(body), "last enabled admin") {
		t.Fatalf("delete the last admin: %d %s", status, body)
	}
	if err := f.svc.DisableUser(context.Background(), "cli:test", "admin"); !errors.Is(err, auth.ErrLastAdmin) {
		t.Fatalf("disable the last admin: %v", err)
	}
	if status, _ := f.do("GET", "/v1/me", f.creds["admin"], nil); status != http.StatusOK {
		t.Fatalf("the last admin was lost: %d", status)
	}
}

// TestLoginsBeyondTheHashBoundAre429: with one password hash at a time and slow hashes, a burst of
// logins gets 429 with Retry-After for those that find no place, before any hashing.
func TestLoginsBeyondTheHashBoundAre429(t *testing.T) {
	db := storetest.Open(t, testenv.Database{Driver: "sqlite", DSN: t.TempDir() + "/k.db"})
	cfg := testAuthConfig()
	cfg.Argon2, cfg.MaxConcurrentHashes = auth.DefaultArgon2, 1
	svc, err := auth.New(cfg, db.Auth(), storetest.Vault(t, db, nil), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(httpapi.Handler(httpapi.Options{API: &httpapi.API{Auth: svc}}))
	defer srv.Close()
	var mu sync.Mutex
	statuses := map[int]int{}
	retryAfter := true
	var wg sync.WaitGroup
	for i := range 30 {
		wg.Go(func() {
			resp, err := http.Post(srv.URL+"/v1/auth/login", "application/json",
				strings.NewReader(fmt.Sprintf(`{"username":"nobody%d","password":"a long enough password"}`, i)))
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			mu.Lock()
			defer mu.Unlock()
			statuses[resp.StatusCode]++
			if resp.StatusCode == http.StatusTooManyRequests && resp.Header.Get("Retry-After") == "" {
				retryAfter = false
			}
		})
	}
	wg.Wait()
	if statuses[http.StatusTooManyRequests] == 0 || statuses[http.StatusUnauthorized] == 0 || !retryAfter {
		t.Fatalf("30 logins at once, one hash at a time: %v (Retry-After on every 429: %v)", statuses, retryAfter)
	}
}

// /v1/status shows each identity's delivery targets and whether each holds its current key.
func TestStatusShowsDeliveryTargets(t *testing.T) {
	f := newFixture(t, testenv.Database{Driver: "sqlite", DSN: t.TempDir() + "/k.db"}, nil)
	mem := delivery.NewMemory()
	f.engine.Delivery = &rotation.Delivery{To: mem, Records: f.db.Deliveries(), Router: &delivery.Router{DefaultRegion: "eu-west-1",
		Targets: []delivery.Target{{Match: delivery.Match{User: "payments-app"}, Kind: delivery.SecretsManager, Name: "keyward/{user}"}}}}
	f.api.Targets = f.engine.TargetStates
	if status, _, body := f.credentials("payments", f.creds["member"]); status != 200 { // the team's first key, made and delivered
		t.Fatalf("credentials: %d %s", status, body)
	}
	status, body := f.doChecked("GET", "/v1/status", f.creds["operator"], nil)
	var doc struct {
		Delivery struct {
			Identities []rotation.IdentityTargets `json:"identities"`
			Stale      int                        `json:"stale_targets"`
		} `json:"delivery"`
	}
	if status != 200 || json.Unmarshal(body, &doc) != nil || len(doc.Delivery.Identities) != 1 || doc.Delivery.Stale != 0 {
		t.Fatalf("status: %d %s", status, body)
	}
	got := doc.Delivery.Identities[0]
	if got.Identity.UserName != "payments-app" || len(got.Targets) != 1 || got.Targets[0].Target != "secrets_manager:eu-west-1:keyward/payments-app" ||
		!got.Targets[0].HoldsCurrent || got.Targets[0].AccessKeyID != got.CurrentKeyID {
		t.Fatalf("targets: %s", body)
	}
}

// TestDatabaseTooSlowIsA503: a PostgreSQL that does not finish a statement within
// statement_timeout (here: the audit trail's table locked by another session) makes the API answer
// 503 with Retry-After and a public message, at once instead of hanging; once the database answers
// again, so does the API.
func TestDatabaseTooSlowIsA503(t *testing.T) {
	dsn := testenv.PostgresDSN(t) + "&statement_timeout=300" // what database.statement_timeout sets
	f := newFixture(t, testenv.Database{Driver: "postgres", DSN: dsn}, nil)
	if status, _, body := f.credentials("payments", f.creds["member"]); status != http.StatusOK {
		t.Fatalf("a read before: %d %s", status, body)
	}
	release := testenv.HoldTableLock(t, dsn, "audit_pending") // where the read's key.read record goes
	start := time.Now()
	resp := f.send("GET", "/v1/teams/payments/credentials", f.creds["member"], nil)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" ||
		!strings.Contains(string(body), "database is unavailable or too slow") || strings.Contains(string(body), "statement timeout") {
		t.Fatalf("a read with the database too slow: %d %s", resp.StatusCode, body)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("the 503 took %s", took)
	}
	release()
	if status, _, body := f.credentials("payments", f.creds["member"]); status != http.StatusOK {
		t.Fatalf("a read after: %d %s", status, body)
	}
}
