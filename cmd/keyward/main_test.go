package main

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/testenv"
)

// binary is the keyward binary built once for these tests: they drive it as an operator would.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "keyward-bin")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "keyward")
	build := exec.Command("go", "build", "-race", "-o", binary, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build keyward:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// env is an environment for one keyward process: a working directory and variables. Nothing of the
// test process's own environment leaks in except PATH and HOME.
type env struct {
	dir  string
	vars []string
}

func newEnv(t *testing.T, db testenv.Database) *env {
	t.Helper()
	return &env{dir: t.TempDir(), vars: append(baseVars(),
		"KEYWARD_VAULT_DRIVER="+db.Driver, "KEYWARD_VAULT_DSN="+db.DSN)}
}

// baseVars: the race-detecting binary must not sleep a second at exit (its default), and a race it
// finds must fail the command.
func baseVars() []string {
	// No test may reach for AWS's instance metadata address: only loopback is ours.
	return []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "GORACE=atexit_sleep_ms=0 halt_on_error=1",
		"AWS_EC2_METADATA_DISABLED=true"}
}

func (e *env) with(vars ...string) *env {
	return &env{dir: e.dir, vars: append(append([]string{}, e.vars...), vars...)}
}

type result struct {
	stdout, stderr string
	code           int
}

func (e *env) run(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Dir, cmd.Env = e.dir, e.vars
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run keyward %v: %v", args, err)
	}
	return result{stdout: out.String(), stderr: errOut.String(), code: code}
}

// must runs keyward and fails the test unless it exits with want.
func (e *env) must(t *testing.T, want int, stdin string, args ...string) result {
	t.Helper()
	r := e.run(t, stdin, args...)
	if r.code != want {
		t.Fatalf("keyward %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, want, r.stdout, r.stderr)
	}
	return r
}

func TestVersion(t *testing.T) {
	e := &env{dir: t.TempDir(), vars: baseVars()}
	if r := e.must(t, 0, "", "version"); !strings.HasPrefix(r.stdout, "keyward dev") {
		t.Fatalf("version: %q", r.stdout)
	}
	var v map[string]string
	r := e.must(t, 0, "", "version", "--output", "json")
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil || v["version"] != "dev" || v["go"] == "" {
		t.Fatalf("version --output json: %q (%v)", r.stdout, err)
	}
	e.must(t, 2, "", "version", "--output", "xml")
}

func TestConfigCheck(t *testing.T) {
	e := &env{dir: t.TempDir(), vars: baseVars()}
	example, err := filepath.Abs("../../examples/keyward.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if r := e.must(t, 0, "", "config", "check", "--config", example); !strings.Contains(r.stdout, "configuration OK") {
		t.Fatalf("config check of the example: %q", r.stdout)
	}
	e.must(t, 0, "", "config", "check") // defaults only
	// A deactivation sooner than a caching consumer's hourly refresh is valid, and warned of.
	if r := e.with("KEYWARD_ROTATION_DEACTIVATE_AFTER=30m").must(t, 0, "", "config", "check"); !strings.Contains(r.stderr,
		"warning: rotation.deactivate_after (30m0s) is shorter than an hour plus rotation.interval") || !strings.Contains(r.stdout, "configuration OK") {
		t.Fatalf("config check with deactivate_after 30m: %q %q", r.stdout, r.stderr)
	}

	bad := filepath.Join(e.dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("server:\n  listen: 127.0.0.1:8080\nvault:\n  driver: sqlite\n  master_key:\n    sorce: file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := e.must(t, 2, "", "config", "check", "--config", bad)
	if !strings.Contains(r.stderr, "bad.yaml:6: vault.master_key.sorce: unknown key (did you mean \"source\"?)") {
		t.Fatalf("config check does not name the key and line: %q", r.stderr)
	}
	r = e.with("KEYWARD_SERVER_SHUTDOWN_TIMEOUT=forever").must(t, 2, "", "config", "check")
	if !strings.Contains(r.stderr, "environment KEYWARD_SERVER_SHUTDOWN_TIMEOUT: server.shutdown_timeout") {
		t.Fatalf("config check does not name the variable: %q", r.stderr)
	}
	// ./keyward.yaml is read when present.
	if err := os.WriteFile(filepath.Join(e.dir, "keyward.yaml"), []byte("log:\n  level: chatty\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := e.must(t, 2, "", "config", "check"); !strings.Contains(r.stderr, "keyward.yaml:2: log.level") {
		t.Fatalf("./keyward.yaml not read: %q", r.stderr)
	}
	e.must(t, 2, "", "config", "check", "--config", filepath.Join(e.dir, "missing.yaml"))
}

const (
	secretA = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
	secretB = "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY"
	keyA    = "AKIAIOSFODNN7EXAMPLE"
	keyB    = "AKIAI44QH8DHBEXAMPLE"
)

// TestVaultCommands drives import, get and list on both drivers, including the bad-input cases.
func TestVaultCommands(t *testing.T) {
	testenv.ForEachDatabase(t, func(t *testing.T, db testenv.Database) {
		e := newEnv(t, db)
		var logs strings.Builder
		run := func(want int, stdin string, args ...string) result {
			t.Helper()
			r := e.must(t, want, stdin, args...)
			logs.WriteString(r.stderr)
			return r
		}

		r := run(0, secretA+"\n", "vault", "import", "--user", "alice", "--account", "123456789012", "--access-key-id", keyA, "--secret-stdin")
		if !strings.Contains(r.stdout, "stored "+keyA+" as version 1 (current) of aws:123456789012:alice") {
			t.Fatalf("import output: %q", r.stdout)
		}
		if db.Driver == "sqlite" {
			info, err := os.Stat(filepath.Join(e.dir, "keyward.key"))
			if err != nil || info.Mode().Perm() != 0o600 {
				t.Fatalf("key file not created 0600: %v %v", info, err)
			}
			if !strings.Contains(r.stderr, "created a new key-encryption key file") {
				t.Fatalf("no warning about the new key file: %q", r.stderr)
			}
		}

		var cred map[string]any
		r = run(0, "", "vault", "get", "alice")
		if err := json.Unmarshal([]byte(r.stdout), &cred); err != nil || cred["AccessKeyId"] != keyA || cred["SecretAccessKey"] != secretA || len(cred) != 2 {
			t.Fatalf("get json: %q", r.stdout)
		}
		r = run(0, "", "vault", "get", "alice", "--output", "credential-process")
		if err := json.Unmarshal([]byte(r.stdout), &cred); err != nil || cred["Version"] != float64(1) || cred["AccessKeyId"] != keyA || cred["SecretAccessKey"] != secretA {
			t.Fatalf("get credential-process: %q", r.stdout)
		}
		if r = run(0, "", "vault", "get", "alice", "-o", "env"); r.stdout != "export AWS_ACCESS_KEY_ID="+keyA+"\nexport AWS_SECRET_ACCESS_KEY="+secretA+"\n" {
			t.Fatalf("get env: %q", r.stdout)
		}
		if r = run(0, "", "vault", "get", "alice", "-o", "ini"); r.stdout != "[alice]\naws_access_key_id = "+keyA+"\naws_secret_access_key = "+secretA+"\n" {
			t.Fatalf("get ini: %q", r.stdout)
		}
		// Export: every current key, as CSV (the header, then one row each) or JSON; each read audited.
		r = run(0, "", "vault", "export", "--output", "csv")
		if lines := strings.Split(strings.TrimSpace(r.stdout), "\n"); len(lines) != 2 ||
			lines[0] != "account,user,team,access_key_id,secret_access_key,created,state" ||
			!strings.HasPrefix(lines[1], "123456789012,alice,,"+keyA+","+secretA+",") || !strings.HasSuffix(lines[1], ",current") {
			t.Fatalf("export csv: %q", r.stdout)
		}
		if r = run(0, "", "vault", "export"); !strings.Contains(r.stdout, `"AccessKeyId":"`+keyA+`"`) || !strings.Contains(r.stdout, `"state":"current"`) {
			t.Fatalf("export json: %q", r.stdout)
		}
		run(2, "", "vault", "export", "--output", "xml")

		// A second key for alice: the account can be left out now that the vault knows her.
		run(0, secretB, "vault", "import", "--user", "alice", "--access-key-id", keyB, "--secret-stdin")
		if r = run(0, "", "vault", "get", "alice"); !strings.Contains(r.stdout, keyB) {
			t.Fatalf("get after second import: %q", r.stdout)
		}
		r = run(0, "", "vault", "list", "--output", "json")
		var list struct {
			Identities []struct {
				AccountID string `json:"account_id"`
				UserName  string `json:"user_name"`
				Versions  []struct {
					AccessKeyID string `json:"access_key_id"`
					State       string `json:"state"`
				} `json:"versions"`
			} `json:"identities"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &list); err != nil || len(list.Identities) != 1 ||
			len(list.Identities[0].Versions) != 2 || list.Identities[0].Versions[0].State != "previous" ||
			list.Identities[0].Versions[1].State != "current" {
			t.Fatalf("list json: %q", r.stdout)
		}
		if r = run(0, "", "vault", "list"); !strings.Contains(r.stdout, "123456789012  alice  2        "+keyB+"  current") {
			t.Fatalf("list text:\n%s", r.stdout)
		}

		// Bad input: exit 2, a message naming what is wrong, nothing written.
		bad := []struct {
			stdin string
			args  []string
			want  string
		}{
			{secretA, []string{"vault", "import", "--user", "bob", "--access-key-id", "AKIAIOSFODNN7EXAMPL3", "--secret-stdin"}, `--account is required: the vault has no identity "bob"`},
			{secretA, []string{"vault", "import", "--user", "bob", "--account", "123", "--access-key-id", "AKIAIOSFODNN7EXAMPL3", "--secret-stdin"}, `--account: account id "123"`},
			{secretA, []string{"vault", "import", "--user", "bob/x", "--account", "123456789012", "--access-key-id", "AKIAIOSFODNN7EXAMPL3", "--secret-stdin"}, `--user: user name "bob/x"`},
			{secretA, []string{"vault", "import", "--user", "bob", "--account", "123456789012", "--access-key-id", "nope", "--secret-stdin"}, `--access-key-id: access key id "nope"`},
			{secretA, []string{"vault", "import", "--user", "bob", "--account", "123456789012", "--access-key-id", "AKIAIOSFODNN7EXAMPL3"}, "--secret-stdin is required"},
			{"", []string{"vault", "import", "--user", "bob", "--account", "123456789012", "--access-key-id", "AKIAIOSFODNN7EXAMPL3", "--secret-stdin"}, "secret access key is empty"},
			{secretA, []string{"vault", "import", "--user", "alice", "--access-key-id", keyA, "--secret-stdin"}, "already in the vault"},
			{"", []string{"vault", "get", "alice", "--output", "yaml"}, "--output must be json, env, ini or credential-process"},
			{"", []string{"vault", "get"}, "accepts 1 arg"},
			{"", []string{"vault", "list", "--bogus"}, "unknown flag: --bogus"},
			{"", []string{"vault", "rewrap", "--to-source", "floppy"}, "--to-source must be file, env or aws-kms"},
			{"", []string{"vault", "rewrap", "--to-source", "file"}, "--to-file is required"},
		}
		for _, b := range bad {
			r := run(2, b.stdin, b.args...)
			if !strings.Contains(r.stderr, b.want) {
				t.Errorf("keyward %v: stderr does not say %q:\n%s", b.args, b.want, r.stderr)
			}
		}
		if r = run(0, "", "vault", "list", "-o", "json"); strings.Count(r.stdout, "access_key_id") != 2 {
			t.Fatalf("bad input wrote something: %s", r.stdout)
		}

		// No credential: exit 1 with a clear message.
		if r = run(1, "", "vault", "get", "nobody"); !strings.Contains(r.stderr, `no identity "nobody"`) {
			t.Fatalf("get of an unknown user: %q", r.stderr)
		}
		// The same user in two accounts must be told apart.
		run(0, secretA, "vault", "import", "--user", "alice", "--account", "210987654321", "--access-key-id", "AKIAIOSFODNN7EXAMPL4", "--secret-stdin")
		if r = run(2, "", "vault", "get", "alice"); !strings.Contains(r.stderr, "give the account") {
			t.Fatalf("ambiguous get: %q", r.stderr)
		}
		if r = run(0, "", "vault", "get", "alice", "--account", "210987654321"); !strings.Contains(r.stdout, "AKIAIOSFODNN7EXAMPL4") {
			t.Fatalf("get with --account: %q", r.stdout)
		}

		for _, s := range []string{secretA, secretB} {
			if strings.Contains(logs.String(), s) {
				t.Fatalf("a secret reached the logs or an error message:\n%s", logs.String())
			}
		}
	})
}

// TestRewrapCommand moves the vault from its key file to a key in an environment variable.
func TestRewrapCommand(t *testing.T) {
	testenv.ForEachDatabase(t, func(t *testing.T, db testenv.Database) {
		e := newEnv(t, db)
		e.must(t, 0, secretA, "vault", "import", "--user", "alice", "--account", "123456789012", "--access-key-id", keyA, "--secret-stdin")
		newKey := "9Iv1x8sHQn2aV0qY7oB3cJ5dL6eK4fM1gN2hP8iR0tU="
		r := e.with("NEW_KEK="+newKey).must(t, 0, "", "vault", "rewrap", "--to-source", "env", "--to-env", "NEW_KEK", "-o", "json")
		var out map[string]any
		// Two data keys: alice's secret and the audit trail's signing key (made by the import's checkpoint).
		if err := json.Unmarshal([]byte(r.stdout), &out); err != nil || out["rewrapped"] != float64(2) {
			t.Fatalf("rewrap output: %q", r.stdout)
		}
		if strings.Contains(r.stderr, newKey) || strings.Contains(r.stdout, newKey) {
			t.Fatal("rewrap printed the new key")
		}
		// The old key file no longer opens the vault, and says why.
		if r := e.must(t, 1, "", "vault", "get", "alice"); !strings.Contains(r.stderr, "wrapped by another key-encryption key") {
			t.Fatalf("get with the old KEK: %q", r.stderr)
		}
		moved := e.with("KEYWARD_VAULT_MASTER_KEY_SOURCE=env", "KEYWARD_MASTER_KEY="+newKey)
		if r := moved.must(t, 0, "", "vault", "get", "alice"); !strings.Contains(r.stdout, secretA) {
			t.Fatalf("get with the new KEK: %q", r.stdout)
		}
		// And back to a new key file, created by the rewrap.
		moved.must(t, 0, "", "vault", "rewrap", "--to-source", "file", "--to-file", "next.key")
		info, err := os.Stat(filepath.Join(e.dir, "next.key"))
		if err != nil || info.Mode().Perm() != 0o600 {
			t.Fatalf("rewrap did not create next.key 0600: %v", err)
		}
		e.with("KEYWARD_VAULT_MASTER_KEY_FILE=next.key").must(t, 0, "", "vault", "get", "alice")
	})
}

func TestKMSKeyEncryptionKey(t *testing.T) {
	cfg := testenv.MotoAWSConfig(t, "us-east-1")
	moto := *cfg.BaseEndpoint
	e := newEnv(t, testenv.Database{Driver: "sqlite", DSN: filepath.Join(t.TempDir(), "k.db")}).with(
		"AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE", "AWS_SECRET_ACCESS_KEY="+secretA,
		"KEYWARD_AWS_REGION=us-east-1", "KEYWARD_AWS_ENDPOINT_URL="+moto)
	keyID := testenv.CreateKMSKey(t, cfg)
	kms := e.with("KEYWARD_VAULT_MASTER_KEY_SOURCE=aws-kms", "KEYWARD_VAULT_MASTER_KEY_KMS_KEY_ID="+keyID)
	kms.must(t, 0, secretB, "vault", "import", "--user", "alice", "--account", "123456789012", "--access-key-id", keyB, "--secret-stdin")
	if r := kms.must(t, 0, "", "vault", "get", "alice"); !strings.Contains(r.stdout, secretB) {
		t.Fatalf("get through KMS: %q", r.stdout)
	}
	if _, err := os.Stat(filepath.Join(e.dir, "keyward.key")); !os.IsNotExist(err) {
		t.Fatal("a key file was created although the KEK is in KMS")
	}
	kms.with("KEYWARD_VAULT_MASTER_KEY_KMS_KEY_ID=alias/missing").must(t, 1, "", "vault", "get", "alice")
}

// TestConcurrentMigrateProcesses starts two keyward migrate processes at once on an empty database.
func TestConcurrentMigrateProcesses(t *testing.T) {
	testenv.ForEachDatabase(t, func(t *testing.T, db testenv.Database) {
		e := newEnv(t, db)
		var wg sync.WaitGroup
		results := make([]result, 3)
		for i := range results {
			wg.Go(func() { results[i] = e.run(t, "", "migrate", "--output", "json") })
		}
		wg.Wait()
		applied := 0
		for _, r := range results {
			if r.code != 0 {
				t.Fatalf("concurrent migrate failed: %s", r.stderr)
			}
			var out struct {
				Applied []string `json:"applied"`
				Version int      `json:"schema_version"`
			}
			if err := json.Unmarshal([]byte(r.stdout), &out); err != nil || out.Version < 1 {
				t.Fatalf("migrate output %q: %v", r.stdout, err)
			}
			applied += len(out.Applied)
		}
		r := e.must(t, 0, "", "migrate")
		if !strings.Contains(r.stdout, "database schema at version") || strings.Contains(r.stdout, "applied") {
			t.Fatalf("migrate on a migrated database: %q", r.stdout)
		}
		if want := strings.Count(r.stdout, "\n"); applied == 0 || want != 1 {
			t.Fatalf("migrations applied %d times in all", applied)
		}
	})
}

// serveProcess is a running keyward serve.
type serveProcess struct {
	cmd     *exec.Cmd
	addr    string
	metrics chan string // the address of /metrics's own listener, when it has one
	logs    *testenv.SyncBuffer
	done    chan error
}

func startServe(t *testing.T, e *env) *serveProcess {
	t.Helper()
	cmd := exec.Command(binary, "serve")
	// The simulated cloud unless the environment names another (the last of a name wins).
	cmd.Dir, cmd.Env = e.dir, append([]string{"KEYWARD_CLOUD=sim", "KEYWARD_SERVER_LISTEN=127.0.0.1:0"}, e.vars...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &serveProcess{cmd: cmd, logs: &testenv.SyncBuffer{}, done: make(chan error, 1), metrics: make(chan string, 1)}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			p.logs.Write([]byte(line + "\n"))
			var rec map[string]any
			if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == "listening" {
				if rec["for"] == "server.metrics_listen" {
					p.metrics <- rec["addr"].(string)
				} else {
					addr <- rec["addr"].(string)
				}
			}
		}
		p.done <- cmd.Wait()
	}()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	select {
	case p.addr = <-addr:
	case <-time.After(60 * time.Second):
		t.Fatalf("serve did not start listening:\n%s", p.logs.String())
	}
	return p
}

func httpGet(t *testing.T, url string, header ...string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestServe starts the service, probes it, and stops it with SIGTERM.
func TestServe(t *testing.T) {
	testenv.ForEachDatabase(t, func(t *testing.T, db testenv.Database) {
		e := newEnv(t, db).with("KEYWARD_SERVER_METRICS_LISTEN=127.0.0.1:0", "KEYWARD_SERVER_METRICS_TOKEN=metrics-token-for-the-test")
		p := startServe(t, e)
		if code, _ := httpGet(t, "http://"+p.addr+"/healthz"); code != http.StatusOK {
			t.Fatalf("/healthz = %d", code)
		}
		if code, body := httpGet(t, "http://"+p.addr+"/readyz"); code != http.StatusOK {
			t.Fatalf("/readyz = %d %s", code, body)
		}
		// /metrics is on its own listener, and only with its token.
		var metricsAddr string
		select {
		case metricsAddr = <-p.metrics:
		case <-time.After(30 * time.Second):
			t.Fatalf("no metrics listener:\n%s", p.logs.String())
		}
		if code, _ := httpGet(t, "http://"+p.addr+"/metrics"); code != http.StatusNotFound {
			t.Fatalf("/metrics on the API's listener = %d, want 404", code)
		}
		if code, _ := httpGet(t, "http://"+metricsAddr+"/metrics", "Authorization", "Bearer wrong"); code != http.StatusUnauthorized {
			t.Fatalf("/metrics with a wrong token = %d, want 401", code)
		}
		code, body := httpGet(t, "http://"+metricsAddr+"/metrics", "Authorization", "Bearer metrics-token-for-the-test")
		for _, want := range []string{`keyward_http_requests_total{code="200",method="GET",route="GET /readyz"} 1`,
			"keyward_last_pass_timestamp_seconds", "keyward_outbox_pending 0", "go_goroutines"} {
			if code != http.StatusOK || !strings.Contains(body, want) {
				t.Fatalf("/metrics = %d, lacks %s:\n%s", code, want, body)
			}
		}
		if db.Driver == "postgres" {
			// Take the schema away under the running service: it must say it is not ready.
			dropTables(t, db.DSN)
			code, body := httpGet(t, "http://"+p.addr+"/readyz")
			if code != http.StatusServiceUnavailable || !strings.Contains(body, `"reasons":["migrations"]`) || strings.Contains(body, "version") {
				t.Fatalf("/readyz without a schema = %d %s", code, body)
			}
			if code, _ := httpGet(t, "http://"+p.addr+"/healthz"); code != http.StatusOK {
				t.Fatalf("/healthz must stay 200 while the process runs, got %d", code)
			}
		}
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-p.done:
			if err != nil {
				t.Fatalf("serve exited with %v after SIGTERM:\n%s", err, p.logs.String())
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("serve did not stop after SIGTERM:\n%s", p.logs.String())
		}
		if !strings.Contains(p.logs.String(), `"msg":"stopped"`) {
			t.Fatalf("serve did not shut down gracefully:\n%s", p.logs.String())
		}
	})
}

func dropTables(t *testing.T, dsn string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	testenv.Exec(t, ctx, dsn, "DROP TABLE credential_versions, identities, schema_migrations")
}

func TestServeBadListenAddress(t *testing.T) {
	e := newEnv(t, testenv.Database{Driver: "sqlite", DSN: filepath.Join(t.TempDir(), "k.db")})
	e = e.with("KEYWARD_CLOUD=sim")
	r := e.with("KEYWARD_SERVER_LISTEN=256.0.0.1:80").must(t, 1, "", "serve")
	if !strings.Contains(r.stderr, "server.listen") {
		t.Fatalf("serve with an unusable address: %q", r.stderr)
	}
	e.with("KEYWARD_SERVER_LISTEN=nonsense").must(t, 2, "", "serve")
}

// TestServeDemo runs the README's demo: no configuration, no cloud account; the first pass rotates
// the users that are due, and SIGTERM stops it cleanly.
func TestServeDemo(t *testing.T) {
	e := &env{dir: t.TempDir(), vars: append(baseVars(), "TMPDIR="+t.TempDir(), "KEYWARD_SERVER_LISTEN=127.0.0.1:0")}
	cmd := exec.Command(binary, "serve", "--demo", "--log-format", "json")
	cmd.Dir, cmd.Env = e.dir, e.vars
	out := &testenv.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	// The pass's summary is printed first, then the table of plans: wait for all of it.
	wants := []string{"pass: rotated 4,", "blocked 1", "break-glass   exempt", "two-keys      blocked", "keyward vault list --config ",
		"The web interface: http://", "mia    member", "TOTP seed"}
	deadline := time.Now().Add(90 * time.Second)
	for missing := wants; len(missing) > 0; {
		text := out.String()
		missing = slices.DeleteFunc(slices.Clone(wants), func(w string) bool { return strings.Contains(text, w) })
		if len(missing) > 0 && time.Now().After(deadline) {
			t.Fatalf("after 90 s the demo's output lacks %q:\n%s", missing, text)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The UI's address comes first; the demo's people sign in with its helper's code.
	text := out.String()
	if !strings.HasPrefix(text, "Keyward demo: open http://127.0.0.1:") && !strings.Contains(strings.SplitN(text, "\n", 3)[1], "Keyward demo: open http://127.0.0.1:") {
		t.Fatalf("the demo does not start with the UI's address:\n%s", text[:min(len(text), 300)])
	}
	ui := strings.Fields(strings.SplitN(text, "The web interface: ", 2)[1])[0]
	cfgPath := strings.Fields(strings.SplitN(text, "keyward vault list --config ", 2)[1])[0]
	var pw string
	for _, line := range strings.Split(text, "\n") {
		if f := strings.Fields(line); len(f) > 6 && f[0] == "mia" {
			pw = f[5]
		}
	}
	code := strings.TrimSpace(e.must(t, 0, "", "demo", "totp", "mia", "--config", cfgPath).stdout)
	if len(code) != 6 || pw == "" {
		t.Fatalf("code %q, password %q", code, pw)
	}
	jar, _ := cookiejar.New(nil)
	client := &http.Client{Jar: jar}
	resp, err := client.Get(ui + "login")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	csrf := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindSubmatch(page)
	if resp.StatusCode != 200 || csrf == nil {
		t.Fatalf("the sign-in page: %d", resp.StatusCode)
	}
	resp, err = client.PostForm(ui+"login", url.Values{"csrf": {string(csrf[1])}, "username": {"mia"}, "password": {pw}, "code": {code}})
	if err != nil {
		t.Fatal(err)
	}
	page, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(page), "My keys") || !strings.Contains(string(page), "ci-deploy") {
		t.Fatalf("mia's keys after signing in: %d\n%s", resp.StatusCode, page)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("demo did not stop cleanly: %v\n%s", err, out.String())
	}
}

// TestSlowBodyIsCutOff: a client that sends its request body a byte at a time does not hold its
// connection: server.read_timeout bounds the whole request.
func TestSlowBodyIsCutOff(t *testing.T) {
	e := newEnv(t, testenv.Database{Driver: "sqlite", DSN: filepath.Join(t.TempDir(), "k.db")}).with("KEYWARD_SERVER_READ_TIMEOUT=2s")
	p := startServe(t, e)
	conn, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := fmt.Fprintf(conn, "POST /v1/auth/login HTTP/1.1\r\nHost: keyward\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"); err != nil {
		t.Fatal(err)
	}
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		_, _ = io.Copy(io.Discard, conn) // returns when the server closes the connection
	}()
	start := time.Now()
	for {
		select {
		case <-closed:
			if took := time.Since(start); took > 30*time.Second {
				t.Fatalf("the connection was held for %s", took)
			}
			return
		case <-time.After(200 * time.Millisecond):
		}
		if time.Since(start) > 60*time.Second {
			t.Fatal("a body sent a byte at a time still holds its connection after 60 s (read_timeout 2s)")
		}
		_, _ = conn.Write([]byte(" "))
	}
}

// TestReadOnlyCommandsNeverCreateADatabase: status, vault list and get, and audit verify on a
// missing or empty database say so and leave it as it is; with the key file present, a missing
// database is an error for every command but serve and migrate (the vault was moved or lost).
func TestReadOnlyCommandsNeverCreateADatabase(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "vault.db")
	e := &env{dir: dir, vars: append(baseVars(), "KEYWARD_VAULT_DRIVER=sqlite", "KEYWARD_VAULT_DSN="+path, "KEYWARD_CLOUD=sim")}
	for _, args := range [][]string{{"status"}, {"vault", "list"}, {"vault", "get", "alice"}, {"audit", "verify"}} {
		r := e.must(t, 1, "", args...)
		if !strings.Contains(r.stderr, "does not exist or is empty: a read-only command never creates one") {
			t.Errorf("keyward %s on no database: %s", strings.Join(args, " "), r.stderr)
		}
		if _, err := os.Stat(path); !os.IsNotExist(err) {
			t.Fatalf("keyward %s made %s", strings.Join(args, " "), path)
		}
	}
	e.must(t, 0, "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n", "vault", "import", "--user", "alice", "--account", "123456789012",
		"--access-key-id", "AKIAIOSFODNN7EXAMPLE", "--secret-stdin")
	e.must(t, 0, "", "vault", "list")
	// The database goes (moved, lost); the key file stays.
	for _, suffix := range []string{"", "-wal", "-shm"} {
		_ = os.Remove(path + suffix)
	}
	for _, args := range [][]string{{"status"}, {"team", "list"}} {
		r := e.must(t, 1, "", args...)
		if !strings.Contains(r.stderr, "keyward.key exists, so the vault it protects was probably moved or lost") {
			t.Errorf("keyward %s with the database gone: %s", strings.Join(args, " "), r.stderr)
		}
		if _, err := os.Stat(path); !os.IsNotExist(err) {
			t.Fatalf("keyward %s made %s", strings.Join(args, " "), path)
		}
	}
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	e.must(t, 1, "", "status")
	if info, err := os.Stat(path); err != nil || info.Size() != 0 {
		t.Fatalf("status wrote to an empty database file: %v %v", info, err)
	}
}

// TestServePurgesPastRetention: serve purges, as it starts, a delivered notification older than
// retention.horizon, and keeps a recent one.
func TestServePurgesPastRetention(t *testing.T) {
	e := newEnv(t, testenv.Database{Driver: "sqlite", DSN: filepath.Join(t.TempDir(), "k.db")}).with("KEYWARD_RETENTION_HORIZON=30d")
	e.must(t, 0, "", "migrate")
	db, err := sql.Open("sqlite", e.dbPath(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for id, at := range map[string]time.Time{"old": time.Now().Add(-31 * 24 * time.Hour), "recent": time.Now().Add(-29 * 24 * time.Hour)} {
		if _, err := db.Exec(`INSERT INTO notification_outbox (id, channel, destination, notice, state, attempts, next_at, created_at, sent_at)
			VALUES ($1, 'webhook', 'ops', '{}', 'sent', 1, 0, $2, $2)`, id, at.UnixMicro()); err != nil {
			t.Fatal(err)
		}
	}
	p := startServe(t, e)
	for i := 0; !strings.Contains(p.logs.String(), `"msg":"purged"`); i++ {
		if i > 300 {
			t.Fatalf("no purge logged:\n%s", p.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	var left []string
	rows, err := db.Query(`SELECT id FROM notification_outbox`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		left = append(left, id)
	}
	if fmt.Sprint(left) != "[recent]" || !strings.Contains(p.logs.String(), `"notifications":1`) {
		t.Fatalf("left %v after:\n%s", left, p.logs.String())
	}
}

// The demo's port: kept when free, another free one when taken.
func TestFreeListen(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	taken := ln.Addr().String()
	addr, moved := freeListen(taken)
	if !moved || addr == taken || !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Fatalf("a taken port: %s %v", addr, moved)
	}
	if got, moved := freeListen(addr); moved || got != addr {
		t.Fatalf("a free port: %s %v", got, moved)
	}
}

// TestSecondServeOnSQLite: SQLite serves one process. A second serve on the same database refuses
// to start and says why and what to do; once the first is gone (even killed), a serve starts again.
func TestSecondServeOnSQLite(t *testing.T) {
	e := newEnv(t, testenv.Database{Driver: "sqlite", DSN: filepath.Join(t.TempDir(), "k.db")})
	first := startServe(t, e)
	r := e.with("KEYWARD_CLOUD=sim", "KEYWARD_SERVER_LISTEN=127.0.0.1:0").must(t, 1, "", "serve")
	want := fmt.Sprintf("another keyward serve (pid %d) already runs on the SQLite database", first.cmd.Process.Pid)
	if !strings.Contains(r.stderr, want) || !strings.Contains(r.stderr, "PostgreSQL") {
		t.Fatalf("a second serve: %s", r.stderr)
	}
	if err := first.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-first.done
	startServe(t, e) // the lock went with the process
}
