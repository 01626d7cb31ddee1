package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/testenv"
)

// TestMigrateSQLiteToPostgres grows a SQLite vault with real history (rotations against moto, a
// team, an API key, notices, a signed checkpoint) into PostgreSQL: every row is copied, the counts
// and the audit trail check out, and Keyward, pointed at PostgreSQL with the same master key, reads
// the same secrets, verifies the trail and rotates on. A second copy into the same database, and bad
// input, are refused.
func TestMigrateSQLiteToPostgres(t *testing.T) {
	w := newMotoWorld(t)
	w.addUsers(t, "u0", "u1", "u2")
	w.env.must(t, 0, "", "rotate", "--once", "--force", "--user", "u0", "--user", "u1")
	w.env.must(t, 0, "", "team", "add", "payments", "--iam-user", "u0", "--account", "123456789012")
	w.env.must(t, 0, "", "apikey", "create", "--name", "ci", "--role", "member", "--team", "payments")
	p := startServe(t, w.env.with("KEYWARD_CLOUD=aws", "KEYWARD_ROTATION_INTERVAL=1h"))
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil { // a checkpoint is signed on the way out
		t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop")
	}
	before := w.env.must(t, 0, "", "vault", "get", "u0").stdout
	var sqlite string // the world's SQLite vault
	for _, v := range w.env.vars {
		if p, ok := strings.CutPrefix(v, "KEYWARD_VAULT_DSN="); ok {
			sqlite = p
		}
	}
	if !filepath.IsAbs(sqlite) {
		t.Fatalf("the world's vault is not a file: %q", sqlite)
	}

	dsn := testenv.PostgresDSN(t)
	e := w.env.with("KEYWARD_MIGRATE_TO_DSN=" + dsn)
	r := e.must(t, 0, "", "migrate", "--from", "sqlite:"+sqlite, "--to", "postgres:", "--output", "json")
	var rep struct {
		Tables []struct {
			Table string
			Rows  int64
		}
		AuditRecords     int64 `json:"audit_records"`
		AuditCheckpoints int   `json:"audit_checkpoints"`
		Verified         bool
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("%v: %s", err, r.stdout)
	}
	rows := map[string]int64{}
	for _, tr := range rep.Tables {
		rows[tr.Table] = tr.Rows
	}
	if !rep.Verified || rep.AuditRecords < 10 || rep.AuditCheckpoints < 1 || rows["credential_versions"] != 4 || rows["rotations"] != 2 ||
		rows["teams"] != 1 || rows["api_keys"] != 1 || rows["signing_keys"] != 1 || rows["identities"] != 2 {
		t.Fatalf("the copy: %s", r.stdout)
	}
	if strings.Contains(r.stdout+r.stderr, dsn) {
		t.Fatal("the DSN was printed")
	}

	pg := w.env.with("KEYWARD_VAULT_DRIVER=postgres", "KEYWARD_VAULT_DSN="+dsn)
	if after := pg.must(t, 0, "", "vault", "get", "u0").stdout; after != before {
		t.Fatalf("u0's secret after the copy differs:\n%s\n%s", before, after)
	}
	pg.must(t, 0, "", "audit", "verify")
	pg.must(t, 0, "", "rotate", "--once", "--force", "--user", "u1", "--user", "u2")
	pg.must(t, 0, "", "audit", "verify")

	if r := e.must(t, 1, "", "migrate", "--from", "sqlite:"+sqlite, "--to", "postgres:"); !strings.Contains(r.stderr, "not empty") {
		t.Fatalf("a second copy into the same database: %s", r.stderr)
	}
	for _, c := range []struct {
		args []string
		says string
	}{
		{[]string{"--from", "mysql:x", "--to", "postgres:"}, `--from "mysql:x": want sqlite:PATH`},
		{[]string{"--from", "sqlite:" + sqlite, "--to", "postgres:"}, "KEYWARD_MIGRATE_TO_DSN"},
		{[]string{"--from", "sqlite:/nonexistent/k.db", "--to", "postgres:host=x"}, "no SQLite vault there"},
	} {
		if r := w.env.must(t, 2, "", append([]string{"migrate"}, c.args...)...); !strings.Contains(r.stderr, c.says) {
			t.Errorf("migrate %v: %s", c.args, r.stderr)
		}
	}
}
