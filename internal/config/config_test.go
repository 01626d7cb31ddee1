package config_test

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/config"
)

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDefaults(t *testing.T) {
	cfg, err := config.Load(config.Source{Path: filepath.Join(t.TempDir(), "absent.yaml")})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Server.Listen != "127.0.0.1:8080" || cfg.Vault.Driver != "sqlite" || cfg.Vault.DSN.Reveal() != "./keyward.db" ||
		cfg.Vault.MasterKey.Source != "file" || cfg.Server.ShutdownTimeout.Std() != 30*time.Second {
		t.Fatalf("unexpected defaults: %+v", cfg)
	}
}

func TestExplicitMissingFile(t *testing.T) {
	_, err := config.Load(config.Source{Path: filepath.Join(t.TempDir(), "absent.yaml"), Explicit: true})
	if err == nil || config.IsInvalid(err) || !strings.Contains(err.Error(), "absent.yaml") {
		t.Fatalf("want a read error naming the file, got %v", err)
	}
}

func TestFileAndEnvironment(t *testing.T) {
	key := base64.StdEncoding.EncodeToString(make([]byte, 32))
	path := writeFile(t, "keyward.yaml", `
server:
  listen: 0.0.0.0:9000
  shutdown_timeout: 1d
vault:
  driver: postgres
  dsn: postgres://keyward@db.example:5432/keyward?sslmode=verify-full
  master_key:
    source: env
log:
  format: text
`)
	cfg, err := config.Load(config.Source{Path: path, Environ: []string{
		"KEYWARD_SERVER_LISTEN=127.0.0.1:7000",
		"KEYWARD_LOG_LEVEL=debug",
		"KEYWARD_MASTER_KEY=" + key,
		"KEYWARD_TEST_SOMETHING=ignored", // not a section: left alone
		"UNRELATED=1",
	}})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Server.Listen != "127.0.0.1:7000" {
		t.Errorf("environment did not override server.listen: %q", cfg.Server.Listen)
	}
	if cfg.Server.ShutdownTimeout.Std() != 24*time.Hour || cfg.Log.Level != "debug" || cfg.Log.Format != "text" {
		t.Errorf("file values lost: %+v", cfg)
	}
	if cfg.Vault.MasterKey.EnvValue.Reveal() != key {
		t.Errorf("master key not read from KEYWARD_MASTER_KEY")
	}
}

func TestListFromEnvironment(t *testing.T) {
	cfg, err := config.Load(config.Source{Environ: []string{`KEYWARD_AWS_ACCOUNTS=[{id: "111122223333", role_arn: "arn:aws:iam::111122223333:role/keyward"}]`}})
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.AWS.Accounts) != 1 || cfg.AWS.Accounts[0].RoleARN != "arn:aws:iam::111122223333:role/keyward" {
		t.Fatalf("accounts = %+v", cfg.AWS.Accounts)
	}
}

func TestEnvironmentDuration(t *testing.T) {
	cfg, err := config.Load(config.Source{Environ: []string{"KEYWARD_SERVER_SHUTDOWN_TIMEOUT=2m"}})
	if err != nil || cfg.Server.ShutdownTimeout.Std() != 2*time.Minute {
		t.Fatalf("got %v, %v", cfg, err)
	}
}

func TestSecretFile(t *testing.T) {
	dsnFile := writeFile(t, "dsn", "postgres://keyward:hunter2@localhost/keyward\n")
	cfg, err := config.Load(config.Source{Environ: []string{
		"KEYWARD_VAULT_DRIVER=postgres", "KEYWARD_VAULT_DSN_FILE=" + dsnFile,
	}})
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Vault.DSN.Reveal(); got != "postgres://keyward:hunter2@localhost/keyward" {
		t.Fatalf("dsn from file = %q", got)
	}
}

// TestProblems checks that each kind of mistake is reported with the key, the place and a reason,
// and that secret values never appear in the message.
func TestProblems(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		environ []string
		want    []string // substrings of the error, in any order
		notWant string
	}{
		{
			name:    "statement timeout",
			environ: []string{"KEYWARD_DATABASE_STATEMENT_TIMEOUT=20m"},
			want:    []string{"database.statement_timeout: want 0 (no bound) or 100ms to 10m (got 20m0s)"},
		},
		{
			name: "cloudwatch namespace needs aws",
			yaml: "cloud: sim\nmetrics:\n  cloudwatch:\n    namespace: Keyward\n",
			want: []string{"metrics.cloudwatch.namespace: CloudWatch needs cloud: aws (got cloud: sim)"},
		},
		{
			name:    "cloudwatch namespace reserved",
			yaml:    "cloud: aws\naws:\n  region: eu-west-1\n",
			environ: []string{"KEYWARD_METRICS_CLOUDWATCH_NAMESPACE=AWS/IAM"},
			want:    []string{`metrics.cloudwatch.namespace: want up to 255 letters, digits and . - _ / # :, not starting with AWS/ (got "AWS/IAM")`},
		},
		{
			name: "delivery targets",
			yaml: "delivery:\n  timeout: 10m\n  targets:\n" +
				"    - {match: {user: \"ci-*\"}, kind: vault, name: x}\n" +
				"    - {match: {user: \"*\"}, kind: secrets_manager, name: \"keyward/{usr}\"}\n" +
				"    - {match: {account: \"12\"}, kind: ssm_parameter, name: /k, kms_key_id: \"arn:aws:kms:eu-west-1:1:key/x\"}\n" +
				"    - {kind: secrets_manager, name: k, format: yaml}\n",
			want: []string{"delivery.timeout: want 1s to 4m", `delivery.targets[0].kind: unknown kind "vault"`,
				"delivery.targets[1].name: \"keyward/{usr}\": unknown variable {usr}", "delivery.targets[2].match.account: want 12 digits",
				`delivery.targets[2].kms_key_id: "arn:aws:kms:eu-west-1:1:key/x" is not a KMS key`, "delivery.targets[3].match: set at least one",
				`delivery.targets[3].format: unknown format "yaml"`},
		},
		{
			name: "unknown key with line and suggestion",
			yaml: "vault:\n  driver: sqlite\n  dns: x.db\n",
			want: []string{"keyward.yaml:3: vault.dns: unknown key (did you mean \"dsn\"?)"},
		},
		{
			name: "unknown section",
			yaml: "server:\n  listen: 127.0.0.1:1\nrotaton:\n  interval: 1m\n",
			want: []string{"keyward.yaml:3: rotaton: unknown key"},
		},
		{
			name: "bad enum",
			yaml: "vault:\n  driver: mysql\n",
			want: []string{`keyward.yaml:2: vault.driver: must be one of sqlite, postgres (got "mysql")`},
		},
		{
			name: "bad duration",
			yaml: "server:\n  shutdown_timeout: soon\n",
			want: []string{`keyward.yaml:2: server.shutdown_timeout: invalid duration "soon"`},
		},
		{
			name: "wrong kind",
			yaml: "server:\n  listen: [a, b]\n",
			want: []string{"keyward.yaml:2: server.listen: want a string"},
		},
		{
			name: "mapping expected",
			yaml: "vault: sqlite\n",
			want: []string{"keyward.yaml:1: vault: want a mapping"},
		},
		{
			name: "invalid yaml",
			yaml: "server:\n  listen: [\n",
			want: []string{"keyward.yaml: not valid YAML"},
		},
		{
			name: "several problems at once",
			yaml: "log:\n  level: loud\n  format: xml\n",
			want: []string{"keyward.yaml:2: log.level", "keyward.yaml:3: log.format"},
		},
		{
			name:    "environment typo",
			environ: []string{"KEYWARD_VAULT_DNS=x"},
			want:    []string{"environment KEYWARD_VAULT_DNS: names no configuration key"},
		},
		{
			name:    "environment bad value",
			environ: []string{"KEYWARD_SERVER_SHUTDOWN_TIMEOUT=-3s"},
			want:    []string{"environment KEYWARD_SERVER_SHUTDOWN_TIMEOUT: server.shutdown_timeout: invalid duration"},
		},
		{
			name:    "bad listen address",
			environ: []string{"KEYWARD_SERVER_LISTEN=8080"},
			want:    []string{"environment KEYWARD_SERVER_LISTEN: server.listen: want host:port"},
		},
		{
			name: "listen port out of range",
			yaml: "server:\n  listen: 127.0.0.1:99999\n  metrics_listen: 127.0.0.1:-1\n",
			want: []string{`keyward.yaml:2: server.listen: want host:port with a port from 0 to 65535, such as 127.0.0.1:8080 (got "127.0.0.1:99999")`,
				`keyward.yaml:3: server.metrics_listen: want host:port with a port from 0 to 65535`},
		},
		{
			name:    "missing master key variable",
			yaml:    "vault:\n  master_key:\n    source: env\n    env: MY_KEK\n",
			want:    []string{"vault.master_key.env: environment variable MY_KEK: is not set"},
			environ: []string{},
		},
		{
			name:    "short master key, value not echoed",
			environ: []string{"KEYWARD_VAULT_MASTER_KEY_SOURCE=env", "KEYWARD_MASTER_KEY=" + base64.StdEncoding.EncodeToString([]byte("sixteen-byte-key"))},
			want:    []string{"must hold 32 bytes", "holds 16"},
			notWant: base64.StdEncoding.EncodeToString([]byte("sixteen-byte-key")),
		},
		{
			name:    "bad postgres dsn, password not echoed",
			environ: []string{"KEYWARD_VAULT_DRIVER=postgres", "KEYWARD_VAULT_DSN=postgres://u:topsecretpw@host:notaport/db"},
			want:    []string{"environment KEYWARD_VAULT_DSN: vault.dsn: not a valid PostgreSQL connection string"},
			notWant: "topsecretpw",
		},
		{
			name: "notifications: addresses, events, e-mail set-up",
			yaml: "notify:\n  admin:\n    emails: [sec@example.com, not-an-address]\n    events: [key.rotatd]\n",
			want: []string{"keyward.yaml:3: notify.admin.emails[1]: \"not-an-address\" is not an e-mail address",
				"notify.admin.events[0]: \"key.rotatd\" matches no event", "notify.email.from: want the sender's e-mail address",
				"notify.smtp.host: required to send e-mail through SMTP"},
		},
		{
			name: "notifications: a webhook needs its secret, a Slack URL is never echoed",
			yaml: "notify:\n  webhooks:\n    - url: https://hooks.example.com/k\n  slack:\n    - name: a\n      url: \"ftp://hooks.slack.com/services/T0/B0/sekrit\"\n    - url: https://hooks.slack.com/x\n",
			want: []string{"notify.webhooks[0].secret: required", "keyward.yaml:6: notify.slack[0].url: want an http(s) URL",
				"notify.slack[1].name: want a name of its own"},
			notWant: "sekrit",
		},
		{
			name: "kms needs key id and region",
			yaml: "vault:\n  master_key:\n    source: aws-kms\n",
			want: []string{"vault.master_key.kms_key_id: must be set", "aws.region: must be set"},
		},
		{
			name:    "dsn and dsn_file",
			yaml:    "vault:\n  dsn: a.db\n  dsn_file: /nonexistent\n",
			want:    []string{"keyward.yaml:3: vault.dsn_file: set vault.dsn or vault.dsn_file, not both"},
			environ: nil,
		},
		{
			name: "unreadable dsn_file",
			yaml: "vault:\n  dsn_file: /nonexistent/dsn\n",
			want: []string{"keyward.yaml:2: vault.dsn_file: cannot read secret file"},
		},
		{
			name: "unknown key inside a list item",
			yaml: "rotation:\n  rules:\n    - path_prefix: /ci/\n    - path_prefx: /ops/\n",
			want: []string{`keyward.yaml:4: rotation.rules[1].path_prefx: unknown key (did you mean "path_prefix"?)`},
		},
		{
			name:    "list from the environment",
			environ: []string{`KEYWARD_AWS_ACCOUNTS=[{id: "123", role_arn: "role/x"}]`},
			want:    []string{"aws.accounts[0].id: want a 12-digit account id", "aws.accounts[0].role_arn: want a role ARN"},
		},
		{
			name: "rule matches nothing",
			yaml: "rotation:\n  rules:\n    - rotate_after: 30d\n",
			want: []string{"rotation.rules[0]: needs path_prefix or name_glob"},
		},
		{
			name: "bad engine values",
			yaml: "cloud: gcp\nrotation:\n  concurrency: 0\n  interval: 0s\n",
			want: []string{`keyward.yaml:1: cloud: must be one of aws, sim (got "gcp")`, "keyward.yaml:3: rotation.concurrency: want 1 to 64", "keyward.yaml:4: rotation.interval: must be positive"},
		},
		{
			name: "bad cluster and secret settings",
			yaml: "vault:\n  driver: postgres\n  dsn_secret_arn: keyward/dsn\nrotation:\n  lease: 10m\naws:\n  organization:\n    external_id: x\n",
			want: []string{`keyward.yaml:3: vault.dsn_secret_arn: want a Secrets Manager secret ARN`, "keyward.yaml:5: rotation.lease: want 1s to 5m",
				"keyward.yaml:8: aws.organization.external_id: needs aws.organization.role_name"},
		},
		{
			name: "every problem in one run",
			yaml: "rotation:\n  interval: soon\nserver:\n  listen: nowhere\n",
			want: []string{`keyward.yaml:2: rotation.interval`, `keyward.yaml:4: server.listen`},
		},
		{
			name:    "bad user paths",
			yaml:    "aws:\n  user_path: ci\n",
			environ: []string{`KEYWARD_AWS_ACCOUNTS=[{id: "123456789012", user_path: "/ci"}]`},
			want: []string{`keyward.yaml:2: aws.user_path: want an IAM path that starts and ends with / such as /ci/ (got "ci")`,
				`aws.accounts[0].user_path: want an IAM path that starts and ends with / such as /ci/ (got "/ci")`},
		},
		{
			name: "bad endpoint",
			yaml: "aws:\n  endpoint_url: localhost:5000\n",
			want: []string{"keyward.yaml:2: aws.endpoint_url: want an http:// or https:// URL"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := config.Source{Environ: tt.environ}
			if tt.yaml != "" {
				dir := t.TempDir()
				src.Path = filepath.Join(dir, "keyward.yaml")
				if err := os.WriteFile(src.Path, []byte(tt.yaml), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			_, err := config.Load(src)
			if err == nil {
				t.Fatal("Load accepted an invalid configuration")
			}
			if !config.IsInvalid(err) {
				t.Fatalf("error is not a configuration error: %v", err)
			}
			msg := strings.ReplaceAll(err.Error(), filepath.Dir(src.Path)+"/", "")
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error does not contain %q:\n%s", w, msg)
				}
			}
			if tt.notWant != "" && strings.Contains(msg, tt.notWant) {
				t.Errorf("error leaks %q:\n%s", tt.notWant, msg)
			}
		})
	}
}

// TestExampleIsValid keeps examples/keyward.yaml complete and accepted.
func TestExampleIsValid(t *testing.T) {
	path := filepath.Join("..", "..", "examples", "keyward.yaml")
	if _, err := config.Load(config.Source{Path: path, Explicit: true}); err != nil {
		t.Fatalf("examples/keyward.yaml: %v", err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range config.Keys() {
		last := key[strings.LastIndex(key, ".")+1:]
		if !strings.Contains(string(data), last+":") {
			t.Errorf("examples/keyward.yaml does not show %s", key)
		}
	}
}

// TestEveryKeyDocumented keeps docs/CONFIG.md in step with the Config struct.
func TestEveryKeyDocumented(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "docs", "CONFIG.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range config.Keys() {
		if !strings.Contains(string(data), "`"+key+"`") {
			t.Errorf("docs/CONFIG.md does not document %s", key)
		}
		if !strings.Contains(key, "[]") && !strings.Contains(string(data), config.EnvName(key)) {
			t.Errorf("docs/CONFIG.md does not name %s", config.EnvName(key))
		}
	}
}
