package httpapi_test

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/access"
	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/httpapi"
	"github.com/keyward/keyward/internal/secret"
	"github.com/keyward/keyward/internal/testenv"
	"github.com/keyward/keyward/internal/vault"
)

type sessionDoc struct {
	AccessKeyID     string `json:"AccessKeyId"`
	SecretAccessKey string
	SessionToken    string
	Expiration      string
}

func (f *fixture) session(team, query string, h http.Header) (int, sessionDoc, []byte) {
	f.t.Helper()
	status, body := f.doChecked("GET", "/v1/teams/"+team+"/credentials?type=session"+query, h, nil)
	var d sessionDoc
	if status == http.StatusOK {
		if err := json.Unmarshal(body, &d); err != nil {
			f.t.Fatalf("session of %s: %s", team, body)
		}
	}
	return status, d, body
}

// Session credentials: made with the team's key, cached (a crowd of readers makes one STS call),
// replaced when the key rotates, usable as the team's IAM user, and every read audited with its type.
func TestSessionCredentials(t *testing.T) {
	testenv.ForEachDatabase(t, func(t *testing.T, d testenv.Database) {
		sessions := &access.Sessions{}
		f := newFixture(t, d, func(api *httpapi.API) { api.Access.Sessions = sessions })
		status, first, body := f.session("payments", "", f.creds["member"])
		if status != 200 || !strings.HasPrefix(first.AccessKeyID, "ASIA") || first.SessionToken == "" {
			t.Fatalf("session: %d %s", status, body)
		}
		exp, err := time.Parse(time.RFC3339, first.Expiration)
		if err != nil || time.Until(exp) < 55*time.Minute || time.Until(exp) > time.Hour {
			t.Fatalf("expiration %q (%v), want the session's own, an hour away", first.Expiration, err)
		}
		arn, err := f.cloud.CallerIdentity(first.AccessKeyID, secret.New(first.SecretAccessKey), secret.New(first.SessionToken))
		if err != nil || !strings.HasSuffix(arn, ":user/payments-app") {
			t.Fatalf("the session does not act as the team's user: %q %v", arn, err)
		}
		if _, err := f.cloud.CallerIdentity(first.AccessKeyID, secret.New(first.SecretAccessKey), secret.New("forged")); err == nil {
			t.Fatal("a session with a wrong token was accepted")
		}

		// 200 readers at once: one STS call (the first read made it).
		var wg sync.WaitGroup
		for range 200 {
			wg.Go(func() {
				if status, got, _ := f.session("payments", "", f.creds["apikey"]); status != 200 || got.AccessKeyID != first.AccessKeyID {
					t.Errorf("cached session: %d %s", status, got.AccessKeyID)
				}
			})
		}
		wg.Wait()
		if n := sessions.Calls(); n != 1 {
			t.Fatalf("%d STS calls for 201 reads, want 1", n)
		}
		// Another duration is another session; formats carry the token.
		if status, other, _ := f.session("payments", "&duration=15m", f.creds["member"]); status != 200 || other.AccessKeyID == first.AccessKeyID {
			t.Fatalf("15m session: %d", status)
		}
		for format, want := range map[string]string{"env": "AWS_SESSION_TOKEN=" + first.SessionToken, "ini": "aws_session_token = " + first.SessionToken,
			"credential-process": `"SessionToken":"` + first.SessionToken} {
			if status, body := f.do("GET", "/v1/teams/payments/credentials?type=session&format="+format, f.creds["member"], nil); status != 200 || !strings.Contains(string(body), want) {
				t.Errorf("format %s: %d %s", format, status, body)
			}
		}

		// A rotation drops the cached session: the next one is made with the new key.
		status, body = f.do("POST", "/v1/teams/payments/rotate", f.creds["operator"], nil)
		var started struct {
			RotationID int64 `json:"rotation_id"`
		}
		if status != http.StatusAccepted || json.Unmarshal(body, &started) != nil || f.waitRotation(started.RotationID, f.creds["operator"]) != "rotated" {
			t.Fatalf("rotate: %d %s", status, body)
		}
		if _, after, _ := f.session("payments", "", f.creds["member"]); after.AccessKeyID == first.AccessKeyID {
			t.Fatal("a session of the replaced key was handed out after the rotation")
		}

		// Every read is on the record with its type, and names the session, never its secret.
		f.credentials("payments", f.creds["member"])
		recs, _, err := f.trail.Find(context.Background(), audit.Filter{Action: "key.read", Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		types := map[string]int{}
		for _, r := range recs {
			types[r.Detail["type"]]++
			raw, _ := json.Marshal(r)
			if strings.Contains(string(raw), first.SecretAccessKey) || strings.Contains(string(raw), first.SessionToken) {
				t.Fatal("an audit record holds a session's secret")
			}
		}
		if types["session"] < 200 || types["key"] < 1 {
			t.Fatalf("read records by type: %v", types)
		}

		// Bad requests name the value at fault.
		for q, want := range map[string]string{"&duration=5m": `duration \"5m\"`, "&duration=13h": `duration \"13h\"`, "&duration=x": `duration \"x\"`} {
			if status, _, body := f.session("payments", q, f.creds["member"]); status != 400 || !strings.Contains(string(body), want) {
				t.Errorf("%s: %d %s", q, status, body)
			}
		}
		if status, body := f.do("GET", "/v1/teams/payments/credentials?type=forever", f.creds["member"], nil); status != 400 || !strings.Contains(string(body), "forever") {
			t.Errorf("bad type: %d %s", status, body)
		}
		if status, body := f.do("GET", "/v1/teams/payments/credentials?duration=1h", f.creds["member"], nil); status != 400 {
			t.Errorf("duration without type=session: %d %s", status, body)
		}
	})
}

// A session-only team hands its members and API keys sessions only; an admin's export still has the key.
func TestSessionOnlyTeam(t *testing.T) {
	f := newFixture(t, testenv.Database{Driver: "sqlite", DSN: t.TempDir() + "/k.db"}, nil)
	status, body := f.doChecked("POST", "/v1/teams", f.creds["admin"], map[string]any{"name": "vendor", "iam_user": "search-app-2",
		"account_id": account, "session_only": true})
	if status != 201 || !strings.Contains(string(body), `"session_only":true`) {
		t.Fatalf("add a session-only team: %d %s", status, body)
	}
	f.cloud.AddUser(account, "search-app-2", "/", nil)
	if err := f.svc.AddMember(context.Background(), "cli:test", "vendor", "user:member"); err != nil {
		t.Fatal(err)
	}
	status, _, body = f.credentials("vendor", f.creds["member"])
	if status != 403 || !strings.Contains(string(body), "session credentials only") || !strings.Contains(string(body), "type=session") {
		t.Fatalf("a session-only team's key: %d %s", status, body)
	}
	status, sess, body := f.session("vendor", "", f.creds["member"])
	if status != 200 || !strings.HasPrefix(sess.AccessKeyID, "ASIA") {
		t.Fatalf("a session-only team's session: %d %s", status, body)
	}
	status, body = f.do("GET", "/v1/export", f.creds["admin"], nil)
	if status != 200 || !strings.Contains(string(body), `"team":"vendor"`) || !strings.Contains(string(body), `"AccessKeyId":"AKIA`) {
		t.Fatalf("export: %d %s", status, body)
	}
}

// Export holds every identity the vault has a current key for — a team's or not — as JSON or CSV.
func TestExportEveryIdentity(t *testing.T) {
	f := newFixture(t, testenv.Database{Driver: "sqlite", DSN: t.TempDir() + "/k.db"}, nil)
	f.credentials("payments", f.creds["member"])
	lone := f.cloud.AddKey(account, "legacy-app", time.Now(), "Active") // legacy-app's second key, imported with its secret
	if _, err := f.vault.Import(context.Background(), vault.Identity{Cloud: vault.CloudAWS, AccountID: account, UserName: "loner"}, lone.ID, lone.Secret); err != nil {
		t.Fatal(err)
	}
	status, body := f.doChecked("GET", "/v1/export?format=csv", f.creds["admin"], nil)
	rows, err := csv.NewReader(strings.NewReader(string(body))).ReadAll()
	if status != 200 || err != nil || len(rows) != 3 || strings.Join(rows[0], ",") != "account,user,team,access_key_id,secret_access_key,created,state" {
		t.Fatalf("csv export: %d %s", status, body)
	}
	found := false
	for _, r := range rows[1:] {
		if r[1] == "loner" && r[2] == "" && r[3] == lone.ID && r[4] == lone.Secret.Reveal() && r[6] == "current" {
			found = true
		}
	}
	if !found {
		t.Fatalf("the identity without a team is missing: %v", rows)
	}
	if status, body := f.do("GET", "/v1/export?format=xml", f.creds["admin"], nil); status != 400 || !strings.Contains(string(body), "xml") {
		t.Fatalf("bad format: %d %s", status, body)
	}
	recs, _, _ := f.trail.Find(context.Background(), audit.Filter{Action: "key.read", Limit: 1000})
	exported := 0
	for _, r := range recs {
		if r.Detail["bulk"] == "export" && r.Detail["type"] == "key" {
			exported++
		}
	}
	if exported != 2 {
		t.Fatalf("%d export reads on the record, want one per key", exported)
	}
}

// A cached session is handed out only while it has more than five minutes to live.
func TestSessionCacheMargin(t *testing.T) {
	var offset atomic.Int64
	sessions := &access.Sessions{}
	f := newFixture(t, testenv.Database{Driver: "sqlite", DSN: t.TempDir() + "/k.db"}, func(api *httpapi.API) {
		api.Access.Sessions = sessions
		api.Access.Now = func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	})
	_, first, _ := f.session("payments", "&duration=15m", f.creds["member"])
	offset.Store(int64(9 * time.Minute)) // six minutes left: still handed out
	if _, again, _ := f.session("payments", "&duration=15m", f.creds["member"]); again.AccessKeyID != first.AccessKeyID || sessions.Calls() != 1 {
		t.Fatalf("with six minutes left: %s (calls %d)", again.AccessKeyID, sessions.Calls())
	}
	offset.Store(int64(11 * time.Minute)) // four minutes left: a new one
	if _, next, _ := f.session("payments", "&duration=15m", f.creds["member"]); next.AccessKeyID == first.AccessKeyID || sessions.Calls() != 2 {
		t.Fatalf("with four minutes left: %s (calls %d)", next.AccessKeyID, sessions.Calls())
	}
}

// healthEventBody is an AWS Health event naming an exposed key, as EventBridge sends it.
func healthEventBody(keyID string) map[string]any {
	return map[string]any{"version": "0", "id": "7bf73129-1428-4cd3-a780-95db273d1602", "detail-type": "AWS Health Event",
		"source": "aws.health", "account": account, "time": "2026-11-30T08:00:00Z", "region": "us-east-1", "resources": []string{},
		"detail": map[string]any{"eventArn": "arn:aws:health:global::event/SECURITY/AWS_RISK_CREDENTIALS_EXPOSED/AWS_RISK_CREDENTIALS_EXPOSED_0123",
			"service": "RISK", "eventTypeCode": "AWS_RISK_CREDENTIALS_EXPOSED", "eventTypeCategory": "issue",
			"affectedEntities": []map[string]string{{"entityValue": keyID}}}}
}

// A leak reported through the API: the team's key is replaced and deactivated at once; AWS Health's
// event does the same through a reporter API key; bad reports are 400 naming what is wrong.
func TestLeakReports(t *testing.T) {
	f := newFixture(t, testenv.Database{Driver: "sqlite", DSN: t.TempDir() + "/k.db"}, nil)
	_, first, _ := f.credentials("payments", f.creds["member"])
	status, body := f.doChecked("POST", "/v1/leaks", f.creds["operator"], map[string]any{"access_key_id": first.AccessKeyID, "reason": "pasted in a ticket"})
	var resp struct {
		Managed, Inactive bool
		Was               string
	}
	if status != 200 || json.Unmarshal(body, &resp) != nil || !resp.Managed || !resp.Inactive || resp.Was != "current" {
		t.Fatalf("report: %d %s", status, body)
	}
	_, second, _ := f.credentials("payments", f.creds["member"])
	if second.AccessKeyID == first.AccessKeyID {
		t.Fatal("the leaked key is still handed out")
	}
	for _, k := range f.cloud.Keys(account, "payments-app") {
		if k.ID == first.AccessKeyID && k.Status != "Inactive" {
			t.Fatalf("the leaked key is %s", k.Status)
		}
	}

	_, reporter, err := f.svc.CreateAPIKey(context.Background(), "cli:test", "health", "reporter", nil, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	rh := http.Header{"X-Api-Key": {reporter.Reveal()}}
	status, body = f.doChecked("POST", "/v1/leaks/aws-health", rh, healthEventBody(second.AccessKeyID))
	if status != 200 || !strings.Contains(string(body), `"inactive":true`) {
		t.Fatalf("AWS Health event: %d %s", status, body)
	}
	if status, _ := f.do("GET", "/v1/teams/payments/credentials", rh, nil); status != 403 {
		t.Fatalf("a reporter read a key: %d", status)
	}
	recs, _, _ := f.trail.Find(context.Background(), audit.Filter{Action: "key.leaked", Limit: 10})
	if len(recs) != 2 || recs[1].Detail["via"] != "aws-health" || recs[1].Actor != "apikey:health" || !strings.Contains(recs[1].Detail["reason"], "AWS_RISK_CREDENTIALS_EXPOSED") {
		t.Fatalf("key.leaked records: %+v", recs)
	}

	for _, c := range []struct {
		body any
		want string
	}{
		{map[string]any{"access_key_id": "AKIA123"}, `access key id \"AKIA123\"`},
		{map[string]any{"access_key_id": first.AccessKeyID, "secret": "x"}, "secret"},
	} {
		if status, body := f.do("POST", "/v1/leaks", f.creds["operator"], c.body); status != 400 || !strings.Contains(string(body), c.want) {
			t.Errorf("%v: %d %s", c.body, status, body)
		}
	}
	ev := healthEventBody(first.AccessKeyID)
	ev["detail"].(map[string]any)["eventTypeCode"] = "AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED"
	if status, body := f.do("POST", "/v1/leaks/aws-health", rh, ev); status != 400 || !strings.Contains(string(body), "AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED") {
		t.Errorf("another event: %d %s", status, body)
	}
}
