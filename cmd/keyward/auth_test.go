package main

import (
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"

	"github.com/keyward/keyward/internal/testenv"
)

// selfSigned writes a certificate for 127.0.0.1 and its key, and returns a client that trusts it.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, client *http.Client) {
	t.Helper()
	cert := testenv.SelfSignedServerCert(t)
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(certFile, cert.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, cert.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: cert.Roots}}, Timeout: 30 * time.Second}
}

// TestBootstrapThenServeOverHTTPS: the bootstrap commands set up teams, users, MFA and API keys on
// the database without a server; `serve` over HTTPS then hands the team's key to those allowed, and
// disabling and revoking take effect on the running server at once.
func TestBootstrapThenServeOverHTTPS(t *testing.T) {
	testenv.ForEachDatabase(t, func(t *testing.T, db testenv.Database) {
		e := newEnv(t, db).with(`KEYWARD_AWS_ACCOUNTS=[{id: "123456789012"}]`)
		pw := "correct horse battery staple"
		e.must(t, 0, "", "team", "add", "payments", "--iam-user", "payments-app", "--account", "123456789012")
		for _, bad := range []struct {
			args  []string
			stdin string
			want  string
		}{
			{[]string{"team", "add", "Payments", "--iam-user", "x", "--account", "123456789012"}, "", `team name "Payments"`},
			{[]string{"team", "add", "search", "--account", "123456789012"}, "", "--iam-user is required"},
			{[]string{"team", "add", "search", "--iam-user", "x", "--account", "12"}, "", "--account"},
			{[]string{"team", "add", "payments", "--iam-user", "other", "--account", "123456789012"}, "", "already exists"},
			{[]string{"team", "add", "elsewhere", "--iam-user", "x", "--account", "999999999999"}, "", "account 999999999999 is not one Keyward manages"},
			{[]string{"user", "add", "alice", "--role", "admin"}, pw, "--password-stdin is required"},
			{[]string{"user", "add", "alice", "--role", "root", "--password-stdin"}, pw, `--role: role "root"`},
			{[]string{"user", "add", "alice", "--role", "admin", "--password-stdin"}, "short", "password: want at least 12"},
			{[]string{"user", "add", "alice", "--role", "admin", "--team", "nope", "--password-stdin"}, pw, `team "nope": not found`},
			{[]string{"apikey", "create", "--name", "ci", "--role", "member", "--cidr", "10.0.0.0/40"}, "", `--cidr "10.0.0.0/40"`},
			{[]string{"apikey", "create", "--name", "ci", "--role", "member", "--expires", "soon"}, "", `--expires "soon"`},
			{[]string{"user", "mfa", "enroll", "nobody"}, "", `user "nobody": not found`},
		} {
			r := e.must(t, 2, bad.stdin, bad.args...)
			if !strings.Contains(r.stderr, bad.want) {
				t.Errorf("keyward %s: stderr lacks %q:\n%s", strings.Join(bad.args, " "), bad.want, r.stderr)
			}
		}
		e.must(t, 0, pw+"\n", "user", "add", "alice", "--role", "admin", "--password-stdin")
		e.must(t, 0, pw+"\n", "user", "add", "bob", "--role", "member", "--team", "payments", "--password-stdin")
		e.must(t, 0, "", "team", "add-member", "payments", "alice")
		r := e.must(t, 0, "", "user", "mfa", "enroll", "bob", "-o", "json")
		var enrolled struct {
			URI string `json:"otpauth_uri"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &enrolled); err != nil || !strings.HasPrefix(enrolled.URI, "otpauth://totp/Keyward:bob?") {
			t.Fatalf("mfa enroll: %s %v", r.stdout, err)
		}
		u, _ := url.Parse(enrolled.URI)
		seed := u.Query().Get("secret")
		// Enrolling again asks for --replace (issue 30 §7); the seed is unchanged until then.
		if r := e.must(t, 2, "", "user", "mfa", "enroll", "bob"); !strings.Contains(r.stderr, "already has an authenticator: give --replace") {
			t.Fatalf("a second enrolment without --replace: %s", r.stderr)
		}
		// A user without an authenticator: said plainly, without the vault's names.
		if r := e.must(t, 2, "", "demo", "totp", "alice"); !strings.Contains(r.stderr, `user "alice" has no authenticator enrolled (keyward user mfa enroll alice)`) ||
			strings.Contains(r.stderr, "totp:") {
			t.Fatalf("demo totp of a user without MFA: %s", r.stderr)
		}
		r = e.must(t, 0, "", "apikey", "create", "--name", "ci", "--role", "member", "--team", "payments", "--cidr", "127.0.0.0/8", "--expires", "90d", "-o", "json")
		var created struct{ Key string }
		if err := json.Unmarshal([]byte(r.stdout), &created); err != nil || !strings.HasPrefix(created.Key, "kw_") {
			t.Fatalf("apikey create: %s %v", r.stdout, err)
		}
		e.must(t, 0, "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n", "vault", "import", "--user", "payments-app", "--account", "123456789012",
			"--access-key-id", "AKIAIOSFODNN7EXAMPLE", "--secret-stdin")
		if r := e.must(t, 0, "", "team", "list"); !strings.Contains(r.stdout, "apikey:ci, user:alice, user:bob") {
			t.Fatalf("team list:\n%s", r.stdout)
		}

		certFile, keyFile, client := selfSigned(t, e.dir)
		p := startServe(t, e.with("KEYWARD_SERVER_TLS_CERT_FILE="+certFile, "KEYWARD_SERVER_TLS_KEY_FILE="+keyFile))
		base := "https://" + p.addr
		call := func(method, path string, h map[string]string, body string) (int, string) {
			t.Helper()
			req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
			for k, v := range h {
				req.Header.Set(k, v)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			raw, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, string(raw)
		}
		if _, err := http.Get("http://" + p.addr + "/healthz"); err == nil {
			// A plain-HTTP request to a TLS listener gets Go's 400, never an answer in the clear.
			if code, _ := httpGet(t, "http://"+p.addr+"/v1/teams/payments/credentials"); code != http.StatusBadRequest {
				t.Fatalf("plain HTTP to the TLS listener: %d", code)
			}
		}
		key := map[string]string{"X-API-Key": created.Key}
		if code, body := call("GET", "/v1/teams/payments/credentials?format=credential-process", key, ""); code != 200 ||
			!strings.Contains(body, `"AccessKeyId":"AKIAIOSFODNN7EXAMPLE"`) || !strings.Contains(body, `"Version":1`) {
			t.Fatalf("credentials over HTTPS with the API key: %d %s", code, body)
		}
		code, _ := totp.GenerateCode(seed, time.Now())
		status, body := call("POST", "/v1/auth/login", map[string]string{"Content-Type": "application/json"},
			`{"username":"bob","password":"`+pw+`","totp":"`+code+`"}`)
		var tok struct{ Token string }
		if status != 200 || json.Unmarshal([]byte(body), &tok) != nil {
			t.Fatalf("bob's login: %d %s", status, body)
		}
		bearer := map[string]string{"Authorization": "Bearer " + tok.Token}
		if status, body := call("GET", "/v1/teams/payments/credentials", bearer, ""); status != 200 || !strings.Contains(body, "AKIAIOSFODNN7EXAMPLE") {
			t.Fatalf("bob's read: %d %s", status, body)
		}

		// Changes made by the CLI beside the running server take effect at once.
		e.must(t, 0, "", "user", "disable", "bob")
		if status, _ := call("GET", "/v1/me", bearer, ""); status != 401 {
			t.Fatalf("a disabled user's token: %d", status)
		}
		e.must(t, 0, "", "apikey", "revoke", "ci")
		if status, _ := call("GET", "/v1/teams/payments/credentials", key, ""); status != 401 {
			t.Fatalf("a revoked API key: %d", status)
		}

		// Everything is in an intact audit trail, and no secret is in it.
		e.must(t, 0, "", "audit", "verify")
		trail := e.must(t, 0, "", "audit", "export", "-o", "jsonl").stdout
		for _, want := range []string{`"action":"team.created"`, `"action":"user.created"`, `"action":"user.mfa_enrolled"`,
			`"action":"apikey.created"`, `"action":"team.member_added"`, `"action":"auth.login"`, `"action":"key.read"`,
			`"action":"user.disabled"`, `"action":"apikey.revoked"`} {
			if !strings.Contains(trail, want) {
				t.Errorf("audit trail lacks %s", want)
			}
		}
		for _, s := range []string{pw, seed, created.Key, "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"} {
			if strings.Contains(trail, s) || strings.Contains(p.logs.String(), s) {
				t.Errorf("a secret is in the audit trail or the server's log")
			}
		}
	})
}

// TestReadOnlyCommandsCreateNothing (issue 30 §3): in a directory with no vault, the commands that
// only read — user list, team list, apikey list, demo totp — refuse, say so, and leave no
// keyward.db or keyward.key behind (as vault list and status already did).
func TestReadOnlyCommandsCreateNothing(t *testing.T) {
	e := &env{dir: t.TempDir(), vars: baseVars()}
	for _, args := range [][]string{{"user", "list"}, {"team", "list"}, {"apikey", "list"}, {"demo", "totp", "oscar"}, {"vault", "list"}} {
		r := e.run(t, "", args...)
		if r.code == 0 || !strings.Contains(r.stderr, "a read-only command never creates one") || strings.Contains(r.stderr, `"msg":"applied migration"`) {
			t.Errorf("%v: exit %d, %s", args, r.code, r.stderr)
		}
		for _, f := range []string{"keyward.db", "keyward.key"} {
			if _, err := os.Stat(filepath.Join(e.dir, f)); err == nil {
				t.Fatalf("%v made %s", args, f)
			}
		}
	}
}
