package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatchlogs"

	"github.com/keyward/keyward/internal/access"
	"github.com/keyward/keyward/internal/notify"
	"github.com/keyward/keyward/internal/secret"
)

// TestAuditTrail runs a full rotation against moto and a credential read through the binary, then
// checks the trail: verify passes, export has every event, and no record and no log line written
// along the way holds a secret. Then it tampers with the database and verify names the record.
func TestAuditTrail(t *testing.T) {
	group := fmt.Sprintf("keyward-%d", time.Now().UnixNano())
	w := newMotoWorld(t, "KEYWARD_AUDIT_FILE=audit.jsonl", "KEYWARD_AUDIT_CLOUDWATCH_LOG_GROUP="+group)
	w.addUsers(t, "alice")
	var logs strings.Builder
	keep := func(r result) result { logs.WriteString(r.stdout + r.stderr); return r }
	keep(w.env.must(t, 0, "", "rotate", "--once", "--user", "alice", "--force"))
	got := keep(w.env.must(t, 0, "", "vault", "get", "alice"))
	var cred map[string]string
	if err := json.Unmarshal([]byte(got.stdout), &cred); err != nil || cred["SecretAccessKey"] == "" {
		t.Fatalf("vault get: %q", got.stdout)
	}
	secret := cred["SecretAccessKey"]

	r := keep(w.env.must(t, 0, "", "audit", "verify"))
	if !strings.Contains(r.stdout, "audit trail intact:") || !strings.Contains(r.stdout, "signed checkpoints") {
		t.Fatalf("verify: %q", r.stdout)
	}
	export := keep(w.env.must(t, 0, "", "audit", "export"))
	var actions []string
	for line := range strings.Lines(export.stdout) {
		var rec struct {
			Action, Actor, Target string
			Detail                map[string]string
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("export line %q: %v", line, err)
		}
		actions = append(actions, rec.Action)
		if rec.Action == access.ActionKeyRead && (!strings.HasPrefix(rec.Actor, "cli:") || rec.Detail["access_key_id"] != cred["AccessKeyId"]) {
			t.Fatalf("the read's record: %+v", rec)
		}
	}
	for _, want := range []string{actionConfigLoaded, "key.adopted", "rotation.started", "key.created", "key.rotated", access.ActionKeyRead} {
		if !slices.Contains(actions, want) {
			t.Fatalf("export lacks %s: %v", want, actions)
		}
	}
	// Everything written (logs of both commands, the verify and the export of every record): the
	// one place the secret may appear is vault get's own output.
	if strings.Count(logs.String(), secret) != 1 || !strings.Contains(got.stdout, secret) {
		t.Fatalf("the secret appears %d times in everything written, want once (vault get's output)", strings.Count(logs.String(), secret))
	}

	// The rotation's records were shipped to both sinks before rotate --once exited.
	file, err := os.ReadFile(filepath.Join(w.env.dir, "audit.jsonl"))
	if err != nil || !strings.Contains(string(file), `"action":"key.rotated"`) || strings.Contains(string(file), secret) {
		t.Fatalf("the file sink lacks the rotation, or holds the secret (%v)", err)
	}
	if info, _ := os.Stat(filepath.Join(w.env.dir, "audit.jsonl")); info.Mode().Perm() != 0o600 {
		t.Fatalf("the file sink's mode: %v", info.Mode())
	}
	events, err := cloudwatchlogs.NewFromConfig(w.admin).GetLogEvents(context.Background(), &cloudwatchlogs.GetLogEventsInput{
		LogGroupName: aws.String(group), LogStreamName: aws.String("keyward"), StartFromHead: aws.Bool(true)})
	if err != nil {
		t.Fatal(err)
	}
	var inCloudWatch []string
	for _, e := range events.Events {
		inCloudWatch = append(inCloudWatch, *e.Message)
	}
	if joined := strings.Join(inCloudWatch, "\n"); !strings.Contains(joined, `"action":"key.rotated"`) || strings.Contains(joined, secret) {
		t.Fatalf("CloudWatch Logs holds %d events without the rotation (or with the secret)", len(inCloudWatch))
	}

	text := w.env.must(t, 0, "", "audit", "export", "--output", "text", "--since", "2020-01-01")
	if !strings.Contains(text.stdout, "key.rotated") || !strings.Contains(text.stdout, "SEQ") {
		t.Fatalf("text export: %q", text.stdout)
	}
	if r := w.env.must(t, 0, "", "audit", "export", "--until", "2020-01-01"); r.stdout != "" {
		t.Fatalf("export until 2020: %q", r.stdout)
	}
	if r := w.env.must(t, 2, "", "audit", "export", "--since", "yesterday"); !strings.Contains(r.stderr, `--since "yesterday"`) {
		t.Fatalf("bad --since: %q", r.stderr)
	}
	if r := w.env.must(t, 2, "", "audit", "export", "--output", "xml"); !strings.Contains(r.stderr, "--output") {
		t.Fatalf("bad --output: %q", r.stderr)
	}

	// Tamper: change who read the key.
	db, err := sql.Open("sqlite", w.env.dbPath(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var seq int64
	if err := db.QueryRow(`SELECT seq FROM audit_events WHERE action = 'key.read'`).Scan(&seq); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`UPDATE audit_events SET actor = 'cli:nobody' WHERE seq = ?`, seq); err != nil {
		t.Fatal(err)
	}
	r = w.env.must(t, 1, "", "audit", "verify")
	if want := "audit trail tampered with at record " + strconv.FormatInt(seq, 10); !strings.Contains(r.stderr, want) {
		t.Fatalf("verify after tampering: %q, want %q", r.stderr, want)
	}
	if r := w.env.must(t, 1, "", "audit", "verify", "-o", "json"); !strings.Contains(r.stdout, `"bad_seq":`+strconv.FormatInt(seq, 10)) {
		t.Fatalf("verify -o json after tampering: %q", r.stdout)
	}
}

// dbPath returns the SQLite database file the environment configures.
func (e *env) dbPath(t *testing.T) string {
	t.Helper()
	for _, v := range slices.Backward(e.vars) {
		if path, ok := strings.CutPrefix(v, "KEYWARD_VAULT_DSN="); ok {
			return path
		}
	}
	t.Fatal("no KEYWARD_VAULT_DSN")
	return ""
}

// TestNotificationsThroughTheBinary: rotate --once against moto tells a webhook (configured from
// the environment) that the key rotated, signed, once, without the secret.
func TestNotificationsThroughTheBinary(t *testing.T) {
	key := "webhook-signing-key-for-the-test"
	var mu sync.Mutex
	var bodies []string
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.Header.Get("X-Keyward-Signature") != notify.Sign(secret.New(key), r.Header.Get("X-Keyward-Timestamp"), body) {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		mu.Lock()
		bodies = append(bodies, string(body))
		mu.Unlock()
	}))
	defer hook.Close()
	w := newMotoWorld(t, fmt.Sprintf(`KEYWARD_NOTIFY_WEBHOOKS=[{url: "%s/hook", secret: "%s", events: ["key.*"]}]`, hook.URL, key))
	w.addUsers(t, "alice")
	w.env.must(t, 0, "", "rotate", "--once", "--user", "alice", "--force")
	got := w.env.must(t, 0, "", "vault", "get", "alice")
	var cred map[string]string
	if err := json.Unmarshal([]byte(got.stdout), &cred); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(bodies) != 1 || !strings.Contains(bodies[0], `"event":"key.rotated"`) || !strings.Contains(bodies[0], cred["AccessKeyId"]) {
		t.Fatalf("webhook got %q", bodies)
	}
	if strings.Contains(bodies[0], cred["SecretAccessKey"]) {
		t.Fatal("the notification holds the secret")
	}
}
