package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/keyward/keyward/internal/testenv"
)

// scheduledEvent is what an EventBridge schedule sends a Lambda function.
const scheduledEvent = `{"version":"0","id":"53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa","detail-type":"Scheduled Event",
"source":"aws.events","account":"123456789012","time":"2026-11-30T12:00:00Z","region":"us-east-1",
"resources":["arn:aws:events:us-east-1:123456789012:rule/keyward"],"detail":{}}`

// TestLambdaHandler invokes the Lambda handler as the runtime would, twice (a cold and a warm
// instance), against moto and a PostgreSQL vault (its DSN read from Secrets Manager) with five users due: the first invocation rotates
// them all and delivers their notices, the second finds nothing to do; the trail verifies. A
// SQLite vault is refused, naming the setting.
func TestLambdaHandler(t *testing.T) {
	const users = 5
	dsn := testenv.PostgresDSN(t)
	hooks, hook := newHookLog(t)
	w := newMotoWorld(t, "KEYWARD_VAULT_DRIVER=postgres", "KEYWARD_VAULT_DSN="+dsn, "KEYWARD_ROTATION_ROTATE_AFTER=90d",
		fmt.Sprintf(`KEYWARD_NOTIFY_WEBHOOKS=[{url: "%s/hook", secret: "hook-secret-for-the-test", events: ["key.rotated"]}]`, hook))
	db, _ := w.dueUsers(t, dsn, users)
	// The AWS SDK reads its credentials from the process's environment, as in a function.
	for _, v := range w.env.vars {
		if name, value, ok := strings.Cut(v, "="); ok && strings.HasPrefix(name, "AWS_") {
			t.Setenv(name, value)
		}
	}
	var logs bytes.Buffer
	// The key file the commands above made in their working directory; the DSN from Secrets Manager,
	// not from the function's configuration.
	keyFile := "KEYWARD_VAULT_MASTER_KEY_FILE=" + filepath.Join(w.env.dir, "keyward.key")
	sec, err := secretsmanager.NewFromConfig(w.admin).CreateSecret(context.Background(), &secretsmanager.CreateSecretInput{
		Name: aws.String("keyward/vault-dsn"), SecretString: aws.String(dsn)})
	if err != nil {
		t.Fatal(err)
	}
	environ := []string{"KEYWARD_CLOUD=aws", keyFile, "KEYWARD_VAULT_DSN_SECRET_ARN=" + aws.ToString(sec.ARN)}
	for _, v := range w.env.vars {
		if !strings.HasPrefix(v, "KEYWARD_VAULT_DSN=") {
			environ = append(environ, v)
		}
	}
	a := &app{stdout: &logs, stderr: &logs, environ: environ}
	if err := a.loadConfig(); err != nil {
		t.Fatal(err)
	}
	handler, closeDB := a.lambdaHandler()
	defer closeDB()
	ctx := context.Background()
	first, err := handler(ctx, json.RawMessage(scheduledEvent))
	if err != nil || first.Summary.Rotated != users || len(first.Errors) > 0 || first.Sent != users {
		t.Fatalf("the first invocation: %+v, %v\n%s", first, err, logs.String())
	}
	again, err := handler(ctx, json.RawMessage(scheduledEvent))
	if err != nil || again.Summary.Rotated != 0 || again.Summary.Scanned < users || len(again.Errors) > 0 {
		t.Fatalf("the warm invocation: %+v, %v\n%s", again, err, logs.String())
	}
	hooks.checkOnce(t, users, time.Time{}, time.Time{}) // no fault: nothing may come twice
	// Each invocation's pass is recorded where status and /healthz/rotation read it.
	var finished sql.NullInt64
	var running sql.NullInt64
	if err := db.QueryRow(`SELECT last_pass_at, pass_started_at FROM leadership WHERE name = 'scheduler'`).Scan(&finished, &running); err != nil ||
		!finished.Valid || running.Valid {
		t.Fatalf("the invocations' passes were not recorded: finished %v, running %v, %v", finished, running, err)
	}
	w.env.must(t, 0, "", "audit", "verify")

	sqlite := &app{stdout: &logs, stderr: &logs, environ: append(append([]string{}, w.env.vars...), "KEYWARD_VAULT_DRIVER=sqlite",
		"KEYWARD_VAULT_DSN="+t.TempDir()+"/k.db", keyFile)}
	if err := sqlite.loadConfig(); err != nil {
		t.Fatal(err)
	}
	h, done := sqlite.lambdaHandler()
	defer done()
	if _, err := h(ctx, json.RawMessage(scheduledEvent)); err == nil || !strings.Contains(err.Error(), "vault.driver") {
		t.Fatalf("a SQLite vault: %v", err)
	}
}
