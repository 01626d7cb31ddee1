package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/pquerna/otp/totp"
)

// TestAttacksLeaveNoSecret runs the outside attacks of the security review against `keyward serve`
// on SQLite with moto — racing logins with wrong passwords, an admin without a second factor going
// around it, another team's key, a member administering, malformed bodies holding a password, paging
// past the audit trail's end, notifications to a webhook and a Slack URL that cannot be reached —
// alongside the legitimate reads and a rotation; then it searches everything they produced (the
// log, the database's files, every answer) for every secret they used. Only the answers whose job is
// to hand a secret out (a team's key to its member, a new API key, a token) may hold one, and only
// their own.
func TestAttacksLeaveNoSecret(t *testing.T) {
	// The webhook and Slack hosts hang up on every connection: the posts fail on the network. (A
	// port merely closed could be given to the server under test meanwhile.)
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close()
	go func() {
		for {
			c, err := dead.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	deadAddr := dead.Addr().String()
	secrets := map[string]string{
		"admin password":     "admin password of the attack test",
		"member password":    "member password of the attack test",
		"webhook path":       "hook-path-sekrit-0123",
		"webhook token":      "hook-query-sekrit-4567",
		"webhook signing":    "webhook-signing-sekrit-89ab",
		"slack path":         "slack-path-sekrit-cdef",
		"metrics token":      "metrics-token-sekrit-0246",
		"wrong password":     "wrong-guess-sekrit-1357",
		"password in a body": "body-password-sekrit-9753",
	}
	w := newMotoWorld(t, "KEYWARD_CLOUD=aws",
		`KEYWARD_AWS_ACCOUNTS=[{id: "123456789012"}]`,
		"KEYWARD_AUTH_REQUIRE_MFA=[admin]",
		"KEYWARD_AUTH_LOCKOUT_DELAY=10ms", "KEYWARD_AUTH_LOCKOUT_MAX_DELAY=20ms",
		"KEYWARD_AUTH_ARGON2_MEMORY_KIB=1024", "KEYWARD_AUTH_ARGON2_ITERATIONS=1",
		"KEYWARD_NOTIFY_INTERVAL=200ms",
		fmt.Sprintf(`KEYWARD_NOTIFY_WEBHOOKS=[{name: ops, url: "http://%s/%s?token=%s", secret: "%s"}]`, deadAddr,
			secrets["webhook path"], secrets["webhook token"], secrets["webhook signing"]),
		fmt.Sprintf(`KEYWARD_NOTIFY_SLACK=[{name: platform, url: "http://%s/services/%s"}]`, deadAddr, secrets["slack path"]),
		"KEYWARD_SERVER_METRICS_TOKEN="+secrets["metrics token"],
		"KEYWARD_SERVER_RATE_LIMIT_PER_IP=0", "KEYWARD_SERVER_RATE_LIMIT_PER_PRINCIPAL=0")
	e := w.env
	// The team's IAM user holds no key: its first read makes one.
	if _, err := w.iam.CreateUser(t.Context(), &iam.CreateUserInput{UserName: aws.String("payments-app")}); err != nil {
		t.Fatal(err)
	}
	e.must(t, 0, "", "team", "add", "payments", "--iam-user", "payments-app", "--account", "123456789012")
	e.must(t, 0, secrets["admin password"]+"\n", "user", "add", "root", "--role", "admin", "--password-stdin")
	e.must(t, 0, secrets["member password"]+"\n", "user", "add", "bob", "--role", "member", "--team", "payments", "--password-stdin")
	enrolled := e.must(t, 0, "", "user", "mfa", "enroll", "root", "-o", "json")
	var enrolment struct {
		URI string `json:"otpauth_uri"`
	}
	if err := json.Unmarshal([]byte(enrolled.stdout), &enrolment); err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(enrolment.URI)
	secrets["TOTP seed"] = u.Query().Get("secret")
	created := e.must(t, 0, "", "apikey", "create", "--name", "ci", "--role", "member", "--team", "payments", "-o", "json")
	var apiKey struct{ Key string }
	if err := json.Unmarshal([]byte(created.stdout), &apiKey); err != nil {
		t.Fatal(err)
	}
	secrets["API key"] = apiKey.Key
	creds, err := w.admin.Credentials.Retrieve(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	secrets["Keyward's own AWS secret"] = creds.SecretAccessKey
	kek, err := os.ReadFile(filepath.Join(e.dir, "keyward.key"))
	if err != nil {
		t.Fatal(err)
	}
	secrets["key file"] = strings.TrimSpace(string(kek))

	p := startServe(t, e)
	base := "http://" + p.addr
	var mu sync.Mutex
	var answers bytes.Buffer // every answer but those that hand a secret out
	call := func(method, path string, h map[string]string, body string, handsOut bool) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		for k, v := range h {
			req.Header.Set(k, v)
		}
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		if !handsOut {
			mu.Lock()
			fmt.Fprintf(&answers, "%s %s -> %d %v\n%s\n", method, path, resp.StatusCode, resp.Header, raw)
			mu.Unlock()
		}
		return resp.StatusCode, string(raw)
	}
	login := func(name, password, code string) (int, string) {
		body, _ := json.Marshal(map[string]string{"username": name, "password": password, "totp": code})
		status, raw := call("POST", "/v1/auth/login", nil, string(body), true)
		if status != 200 {
			mu.Lock()
			fmt.Fprintf(&answers, "login %s -> %d\n%s\n", name, status, raw)
			mu.Unlock()
			return status, ""
		}
		var tok struct{ Token string }
		_ = json.Unmarshal([]byte(raw), &tok)
		return status, tok.Token
	}

	// Racing guesses at one name: no more than max_failures (10) are checked.
	var wg sync.WaitGroup
	var statusMu sync.Mutex
	statuses := map[int]int{}
	for range 40 {
		wg.Go(func() {
			status, _ := login("bob-the-victim", secrets["wrong password"], "")
			statusMu.Lock()
			statuses[status]++
			statusMu.Unlock()
		})
	}
	wg.Wait()
	if statuses[401] > 10 || statuses[401]+statuses[429] != 40 {
		t.Fatalf("40 racing guesses: %v (at most 10 may be checked)", statuses)
	}

	// The admin without its code cannot log in; with it, it can.
	if status, _ := login("root", secrets["admin password"], ""); status != 401 {
		t.Fatalf("the admin without its code: %d", status)
	}
	code, err := totp.GenerateCode(secrets["TOTP seed"], time.Now())
	if err != nil {
		t.Fatal(err)
	}
	_, adminToken := login("root", secrets["admin password"], code)
	_, bobToken := login("bob", secrets["member password"], "")
	if adminToken == "" || bobToken == "" {
		t.Fatalf("logins failed:\n%s", answers.String())
	}
	secrets["admin token"], secrets["member token"] = adminToken, bobToken
	admin := map[string]string{"Authorization": "Bearer " + adminToken}
	bob := map[string]string{"Authorization": "Bearer " + bobToken}
	ci := map[string]string{"X-API-Key": apiKey.Key}

	// The team's first key, made through moto, handed to its member.
	status, first := call("GET", "/v1/teams/payments/credentials", bob, "", true)
	var firstKey struct{ AccessKeyId, SecretAccessKey string }
	if err := json.Unmarshal([]byte(first), &firstKey); status != 200 || err != nil || firstKey.SecretAccessKey == "" {
		t.Fatalf("the member's first read: %d %s", status, first)
	}
	secrets["the team's first AWS secret"] = firstKey.SecretAccessKey

	// What must be refused.
	for _, c := range []struct {
		method, path string
		h            map[string]string
		body         string
		want         int
	}{
		{"POST", "/v1/apikeys", bob, `{"name":"sneaky","role":"admin"}`, 403},
		{"POST", "/v1/users", bob, `{"name":"sneaky","role":"admin","password":"` + secrets["password in a body"] + `"}`, 403},
		{"GET", "/v1/export", ci, "", 403},
		{"GET", "/v1/teams/other/credentials", bob, "", 403},
		{"POST", "/v1/auth/login", nil, `{"username":"bob","password":"` + secrets["password in a body"] + `"`, 400},
		{"POST", "/v1/auth/login", nil, `{"username":"bob","password":"` + secrets["password in a body"] + `","extra":1}`, 400},
		{"GET", "/v1/audit?after=9223372036854775807", admin, "", 200},
		{"GET", "/metrics", nil, "", 401},
		{"GET", "/readyz", nil, "", 200},
	} {
		if status, body := call(c.method, c.path, c.h, c.body, false); status != c.want {
			t.Errorf("%s %s: %d %s, want %d", c.method, c.path, status, body, c.want)
		}
	}
	if status, body := call("GET", "/metrics", map[string]string{"Authorization": "Bearer " + secrets["metrics token"]}, "", false); status != 200 {
		t.Errorf("/metrics with its token: %d %s", status, body)
	}

	// A rotation: its notices go to the unreachable webhook and Slack URL.
	status, started := call("POST", "/v1/teams/payments/rotate", admin, "", false)
	var rot struct {
		RotationID int64 `json:"rotation_id"`
	}
	if err := json.Unmarshal([]byte(started), &rot); status != 202 || err != nil {
		t.Fatalf("rotate: %d %s", status, started)
	}
	for i := 0; ; i++ {
		_, body := call("GET", fmt.Sprintf("/v1/rotations/%d", rot.RotationID), admin, "", false)
		if strings.Contains(body, `"status":"rotated"`) {
			break
		}
		if i > 600 {
			t.Fatalf("the rotation did not finish: %s", body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	status, second := call("GET", "/v1/teams/payments/credentials", ci, "", true)
	var secondKey struct{ AccessKeyId, SecretAccessKey string }
	if err := json.Unmarshal([]byte(second), &secondKey); status != 200 || err != nil || secondKey.AccessKeyId == firstKey.AccessKeyId {
		t.Fatalf("the API key's read after the rotation: %d %s", status, second)
	}
	secrets["the team's second AWS secret"] = secondKey.SecretAccessKey
	for i := 0; !strings.Contains(p.logs.String(), "notification not delivered"); i++ {
		if i > 200 {
			t.Fatalf("no failed delivery was logged:\n%s", p.logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop")
	}

	// Everything the attacks produced, searched for every secret.
	db := e.dbPath(t)
	var files bytes.Buffer
	for _, suffix := range []string{"", "-wal"} {
		raw, err := os.ReadFile(db + suffix)
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		files.Write(raw)
	}
	if files.Len() == 0 {
		t.Fatal("no database files to search")
	}
	places := map[string]string{"the log": p.logs.String(), "the database's files": files.String(), "the answers": answers.String()}
	for where, text := range places {
		for what, s := range secrets {
			if s == "" {
				t.Fatalf("no value for %s", what)
			}
			if strings.Contains(text, s) {
				t.Errorf("%s holds %s", where, what)
			}
		}
	}
}
