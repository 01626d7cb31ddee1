package host

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/delivery"
	"github.com/keyward/keyward/internal/secret"
	"github.com/keyward/keyward/internal/testenv"
)

const sampleFile = `# managed by hand, except [app]
[default]
aws_access_key_id = AKIADEFAULT000000000
aws_secret_access_key = default-secret
region = eu-west-1

; the app's profile
[app]
region = us-east-1
aws_access_key_id=AKIAOLD0000000000000
aws_session_token = stale-token
aws_secret_access_key=old-secret
output = json

[other]
aws_access_key_id = AKIAOTHER00000000000
aws_secret_access_key = other-secret
`

// TestSetProfile: the profile's credential lines are replaced where they stood (a stale session
// token removed); every other line, comment and profile stays byte for byte; a missing profile is
// added at the end, and a missing file made.
func TestSetProfile(t *testing.T) {
	got := string(setProfile([]byte(sampleFile), "app", "AKIANEW0000000000000", secret.New("new-secret")))
	want := strings.Replace(sampleFile, "aws_access_key_id=AKIAOLD0000000000000\naws_session_token = stale-token\naws_secret_access_key=old-secret\n",
		"aws_access_key_id = AKIANEW0000000000000\naws_secret_access_key = new-secret\n", 1)
	if got != want {
		t.Fatalf("setProfile:\n%s\nwant:\n%s", got, want)
	}
	if id, sec := readProfile([]byte(got), "app"); id != "AKIANEW0000000000000" || sec.Reveal() != "new-secret" {
		t.Fatalf("readProfile: %s", id)
	}
	added := string(setProfile([]byte(strings.TrimSuffix(sampleFile, "\n")), "ci", "AKIACI00000000000000", secret.New("s")))
	if !strings.HasPrefix(added, strings.TrimSuffix(sampleFile, "\n")+"\n\n[ci]\naws_access_key_id = AKIACI00000000000000\n") {
		t.Fatalf("a new profile:\n%s", added)
	}
	if fresh := string(setProfile(nil, "default", "AKIA1", secret.New("s"))); fresh != "[default]\naws_access_key_id = AKIA1\naws_secret_access_key = s\n" {
		t.Fatalf("a new file: %q", fresh)
	}
	// A profile with no credential lines gets them after its last line.
	bare := "[app]\nregion = us-east-1\n\n[other]\nx = 1\n"
	if got := string(setProfile([]byte(bare), "app", "AKIA2", secret.New("s"))); got != "[app]\nregion = us-east-1\naws_access_key_id = AKIA2\naws_secret_access_key = s\n\n[other]\nx = 1\n" {
		t.Fatalf("a bare profile: %q", got)
	}
}

// TestCredentialsFile: Publish writes the profile atomically with mode 0600 (an existing file's
// mode and the rest of its content kept as they were), runs the run command after it, and Current
// reads the key back; a crash between the temporary file and the rename leaves the old file whole,
// and the next write removes the temporary file.
func TestCredentialsFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "credentials")
	if err := os.WriteFile(path, []byte(sampleFile), 0o600); err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(dir, "reloaded")
	d := New(slog.New(slog.DiscardHandler), os.Getenv("PATH"), dir)
	s := delivery.Spec{Kind: delivery.CredentialsFile, Name: path + "[app]", File: &delivery.FileTarget{Path: path, Profile: "app",
		Run: []string{"touch", marker}}}
	p := delivery.Payload{KeyID: "AKIANEW0000000000000", Secret: secret.New("new-secret")}
	ctx := context.Background()
	if err := d.Stage(ctx, s, p); err != nil {
		t.Fatal(err)
	}
	if raw, _ := os.ReadFile(path); string(raw) != sampleFile {
		t.Fatal("Stage wrote the file")
	}
	if err := d.Publish(ctx, s, p); err != nil {
		t.Fatal(err)
	}
	held, err := d.Current(ctx, s)
	if err != nil || held.KeyID != p.KeyID || !held.Content.Equal(delivery.JSON.Render(p.KeyID, p.Secret)) {
		t.Fatalf("Current: %+v %v", held.KeyID, err)
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("mode: %v %v", st.Mode(), err)
	}
	if _, err := os.Stat(marker); err != nil {
		t.Fatal("the run command did not run after the write")
	}

	// A crash between the temporary file and the rename: the old file is whole.
	before, _ := os.ReadFile(path)
	d.BeforeRename = func() { panic("crash") }
	func() {
		defer func() { _ = recover() }()
		_ = d.Publish(ctx, s, delivery.Payload{KeyID: "AKIANEXT000000000000", Secret: secret.New("next")})
	}()
	if after, _ := os.ReadFile(path); string(after) != string(before) {
		t.Fatal("a crash before the rename changed the file")
	}
	d.BeforeRename = nil
	if err := d.Publish(ctx, s, delivery.Payload{KeyID: "AKIANEXT000000000000", Secret: secret.New("next")}); err != nil {
		t.Fatal(err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, tempPrefix+"*")); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
	// Withdraw puts the old key back.
	if err := d.Withdraw(ctx, s, p, &p); err != nil {
		t.Fatal(err)
	}
	if held, _ := d.Current(ctx, s); held.KeyID != p.KeyID {
		t.Fatalf("after Withdraw: %s", held.KeyID)
	}
	// A failing run command fails the target.
	s.File.Run = []string{"false"}
	if err := d.Publish(ctx, s, p); err == nil || !strings.Contains(err.Error(), "command false") {
		t.Fatalf("a failing run command: %v", err)
	}
}

// TestExec: the command reads the key on its standard input, never in its arguments or
// environment; a failure or a timeout fails the target, its output logged on one line with the
// secret removed.
func TestExec(t *testing.T) {
	dir := t.TempDir()
	got := filepath.Join(dir, "got")
	script := filepath.Join(dir, "take-key")
	if err := os.WriteFile(script, []byte("#!/bin/sh\ncat > "+got+"\nenv > "+got+".env\necho \"$@\" > "+got+".args\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	logs := &testenv.SyncBuffer{}
	d := New(slog.New(slog.NewTextHandler(logs, nil)), os.Getenv("PATH"), dir)
	t.Setenv("KEYWARD_VAULT_MASTER_KEY", "must-not-reach-the-command")
	ctx := context.Background()
	s := delivery.Spec{Kind: delivery.Exec, Name: "vendor", Exec: &delivery.ExecTarget{Command: []string{script, "--vendor", "acme"}, Timeout: 5 * time.Second}}
	p := delivery.Payload{KeyID: "AKIANEW0000000000000", Secret: secret.New("the-secret-value")}
	if err := d.Stage(ctx, s, p); err != nil {
		t.Fatal(err)
	}
	if err := d.Publish(ctx, s, p); err != nil {
		t.Fatal(err)
	}
	in, _ := os.ReadFile(got)
	env, _ := os.ReadFile(got + ".env")
	args, _ := os.ReadFile(got + ".args")
	if string(in) != `{"Version":1,"Action":"deliver","AccessKeyId":"AKIANEW0000000000000","SecretAccessKey":"the-secret-value"}` {
		t.Fatalf("stdin: %s", in)
	}
	if strings.Contains(string(env)+string(args), "the-secret-value") || strings.Contains(string(env), "must-not-reach") {
		t.Fatal("the secret or Keyward's environment reached the command's arguments or environment")
	}
	if held, err := d.Current(ctx, s); err != nil || held.Unreadable == "" {
		t.Fatalf("Current of a command: %+v %v", held, err)
	}
	for name, tc := range map[string]struct {
		body, want string
		timeout    time.Duration
	}{
		"fails":     {"#!/bin/sh\necho \"refused $(cat)\"\nexit 3\n", "exit status 3", 5 * time.Second},
		"times out": {"#!/bin/sh\nsleep 30\n", "did not finish within 300ms", 300 * time.Millisecond},
	} {
		if err := os.WriteFile(script, []byte(tc.body), 0o700); err != nil {
			t.Fatal(err)
		}
		s.Exec.Timeout = tc.timeout
		start := time.Now()
		err := d.Publish(ctx, s, p)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "the-secret-value") {
			t.Fatalf("%s: %v", name, err)
		}
		if time.Since(start) > 5*time.Second {
			t.Fatalf("%s: took %s", name, time.Since(start))
		}
	}
	if strings.Contains(logs.String(), "the-secret-value") || !strings.Contains(logs.String(), "[redacted]") {
		t.Fatalf("the log: %s", logs.String())
	}
	missing := delivery.Spec{Kind: delivery.Exec, Name: "x", Exec: &delivery.ExecTarget{Command: []string{"/no/such/command"}}}
	if err := d.Stage(ctx, missing, p); err == nil || !strings.Contains(err.Error(), "/no/such/command") {
		t.Fatalf("a missing command: %v", err)
	}
}
