package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iam"

	"github.com/keyward/keyward/internal/testenv"
)

// key is an access key as the vault and the consumers see it.
type key struct{ AccessKeyId, SecretAccessKey string }

// vaultKey reads a user's current key from the vault.
func (e *env) vaultKey(t *testing.T, user string) key {
	t.Helper()
	var k key
	if err := json.Unmarshal([]byte(e.must(t, 0, "", "vault", "get", user, "--output", "json").stdout), &k); err != nil || k.AccessKeyId == "" {
		t.Fatalf("vault get %s: %v", user, err)
	}
	return k
}

// profileWorks signs in to moto's STS with the profile, through the real AWS CLI and boto3, with
// nothing but the credentials file; both must answer as the user.
func profileWorks(t *testing.T, endpoint, file, profile, user string) {
	t.Helper()
	env := append(baseVars(), "AWS_SHARED_CREDENTIALS_FILE="+file, "AWS_CONFIG_FILE=/dev/null", "AWS_PROFILE="+profile,
		"AWS_EC2_METADATA_DISABLED=true")
	cli := exec.Command("aws", "--endpoint-url", endpoint, "--region", "us-east-1", "--output", "text", "sts", "get-caller-identity", "--query", "Arn")
	cli.Env = env
	out, err := cli.CombinedOutput()
	if err != nil || !strings.HasSuffix(strings.TrimSpace(string(out)), ":user/"+user) {
		t.Fatalf("the AWS CLI with profile %s: %v %s", profile, err, out)
	}
	py := exec.Command("python3", "-c", `import boto3, sys
print(boto3.Session().client("sts", endpoint_url=sys.argv[1], region_name="us-east-1").get_caller_identity()["Arn"])`, endpoint)
	py.Env = env
	out, err = py.CombinedOutput()
	if err != nil || !strings.HasSuffix(strings.TrimSpace(string(out)), ":user/"+user) {
		t.Fatalf("boto3 with profile %s: %v %s", profile, err, out)
	}
}

// keyWorks signs in to moto's STS with the key through the AWS CLI.
func keyWorks(t *testing.T, endpoint string, k key, user string) {
	t.Helper()
	who, err := awsCLI(t, endpoint, k.AccessKeyId, k.SecretAccessKey, "sts", "get-caller-identity", "--query", "Arn")
	if err != nil || !strings.HasSuffix(who, ":user/"+user) {
		t.Fatalf("the key does not work: %v %s", err, who)
	}
}

const otherProfiles = `# hand-written: Keyward writes [app] only
[default]
aws_access_key_id = AKIADEFAULT000000000
aws_secret_access_key = default-secret
region = eu-west-1

; a colleague's
[other]
aws_access_key_id = AKIAOTHER00000000000
aws_secret_access_key = other-secret
`

// hostWorld is moto (signatures checked), a GitHub test server, and the delivery targets of three
// users: alice's key goes to a profile of a credentials file and to a command, bob's to a
// repository's Actions secrets, carol's to a command that refuses it.
type hostWorld struct {
	*motoWorld
	gh        *testenv.GitHub
	gl        *testenv.GitLab
	dir       string
	credsFile string
	taken     string // what alice's command was given, one JSON document a line
}

func newHostWorld(t *testing.T, db testenv.Database, extra ...string) *hostWorld {
	t.Helper()
	dir := t.TempDir()
	gh := testenv.NewGitHub(t)
	gh.AddRepo("acme/deploy", "production")
	gh.AddToken("ghp_keywardtest0001", testenv.GitHubToken{Sees: []string{"repos/acme/deploy"}, Write: true})
	gh.AddToken("ghp_readonly0001", testenv.GitHubToken{Sees: []string{"repos/acme/deploy"}})
	gl := testenv.NewGitLab(t)
	gl.AddProject("acme/mobile")
	gl.AddToken("glpat-keywardtest0001", testenv.GitLabToken{Sees: []string{"acme"}, Maintainer: true})
	for name, content := range map[string]string{"token": "ghp_keywardtest0001\n", "gitlab-token": "glpat-keywardtest0001\n", "readonly": "ghp_readonly0001\n", "credentials": otherProfiles,
		"take-key": "#!/bin/sh\ncat >> " + filepath.Join(dir, "taken") + "\necho >> " + filepath.Join(dir, "taken") + "\n",
		"refuse":   "#!/bin/sh\necho \"vendor API said no to $(cat)\"\nexit 3\n",
		"hang":     "#!/bin/sh\nsleep 20\n"} {
		mode := os.FileMode(0o600)
		if name == "take-key" || name == "refuse" || name == "hang" {
			mode = 0o700
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), mode); err != nil {
			t.Fatal(err)
		}
	}
	targets := fmt.Sprintf(`KEYWARD_DELIVERY_TARGETS=[`+
		`{match: {user: alice}, kind: credentials_file, path: "%[1]s/credentials", profile: app}, `+
		`{match: {user: alice}, kind: exec, name: vendor, command: ["%[1]s/take-key", "--vendor", "acme"], timeout: 10s}, `+
		`{match: {user: bob}, kind: github_actions, repository: acme/deploy, environment: production, base_url: "%[2]s", token_file: "%[1]s/token"}, `+
		`{match: {user: bob}, kind: gitlab_ci, project: acme/mobile, environment_scope: production, protected: true, base_url: "%[3]s", token_file: "%[1]s/gitlab-token"}, `+
		`{match: {user: carol}, kind: exec, name: refusing-vendor, command: ["%[1]s/refuse"]}, `+
		`{match: {user: erin}, kind: exec, name: hanging-vendor, command: ["%[1]s/hang"], timeout: 1s}, `+
		`{match: {user: dave}, kind: github_actions, repository: acme/deploy, base_url: "%[2]s", token_file: "%[1]s/readonly"}]`, dir, gh.URL, gl.URL)
	w := newMotoWorldOn(t, db, append([]string{targets, "KEYWARD_DELIVERY_TIMEOUT=1s"}, extra...)...)
	return &hostWorld{motoWorld: w, gh: gh, gl: gl, dir: dir, credsFile: filepath.Join(dir, "credentials"), taken: filepath.Join(dir, "taken")}
}

// TestDeliveryToHostsAndGitHub rotates with the real binary against moto (signatures checked):
// after each of 5 rotations the real AWS CLI and boto3 sign in with the profile Keyward wrote, the
// file's other profiles byte for byte as they were, and the command was given the same key on its
// standard input; bob's key reaches an environment's Actions secrets on the GitHub test server and
// works; deliver --check says what it can and cannot read back, finds a secret written by someone
// else and repairs it; a command that refuses the key, and a token that may not write secrets, roll
// their rotations back with the old key current and active; so does a command that never answers.
func TestDeliveryToHostsAndGitHub(t *testing.T) {
	testenv.ForEachDatabase(t, func(t *testing.T, db testenv.Database) {
		w := newHostWorld(t, db, "KEYWARD_ROTATION_DEACTIVATE_AFTER=1s", "KEYWARD_ROTATION_DELETE_AFTER=1s")
		endpoint := *w.admin.BaseEndpoint
		pre := w.addUsers(t, "alice", "bob", "carol", "dave", "erin")
		seen := map[string]bool{}
		for round := 1; len(seen) < 5; round++ {
			if round > 20 {
				t.Fatalf("only %d rotations of alice in 20 passes", len(seen))
			}
			r := w.env.run(t, "", "rotate", "--once", "--user", "alice", "--force")
			if r.code != 0 {
				// The old key is still there (deactivated, not yet deleted): the next pass deletes it.
				time.Sleep(1100 * time.Millisecond)
				continue
			}
			k := w.env.vaultKey(t, "alice")
			if seen[k.AccessKeyId] {
				continue
			}
			seen[k.AccessKeyId] = true
			profileWorks(t, endpoint, w.credsFile, "app", "alice")
			raw, _ := os.ReadFile(w.credsFile)
			if want := otherProfiles + "\n[app]\naws_access_key_id = " + k.AccessKeyId + "\naws_secret_access_key = " + k.SecretAccessKey + "\n"; string(raw) != want {
				t.Fatalf("the credentials file after rotation %d:\n%s", len(seen), raw)
			}
			if st, _ := os.Stat(w.credsFile); st.Mode().Perm() != 0o600 {
				t.Fatalf("the credentials file's mode: %v", st.Mode())
			}
			taken, _ := os.ReadFile(w.taken)
			lines := strings.Split(strings.TrimSpace(string(taken)), "\n")
			var got struct{ Action, AccessKeyId, SecretAccessKey string }
			if err := json.Unmarshal([]byte(lines[len(lines)-1]), &got); err != nil || got.AccessKeyId != k.AccessKeyId ||
				got.SecretAccessKey != k.SecretAccessKey || got.Action != "deliver" {
				t.Fatalf("the command was given %+v (%v)", got.AccessKeyId, err)
			}
			time.Sleep(1100 * time.Millisecond)
		}

		// bob: an environment's Actions secrets.
		w.env.must(t, 0, "", "rotate", "--once", "--user", "bob", "--force")
		k := w.env.vaultKey(t, "bob")
		const root = "repos/acme/deploy/environments/production"
		id, _ := w.gh.Secret(root, "AWS_ACCESS_KEY_ID")
		sec, _ := w.gh.Secret(root, "AWS_SECRET_ACCESS_KEY")
		if id.Value != k.AccessKeyId || sec.Value != k.SecretAccessKey {
			t.Fatalf("GitHub holds %s, the vault %s", id.Value, k.AccessKeyId)
		}
		keyWorks(t, endpoint, key{id.Value, sec.Value}, "bob")
		glID, _ := w.gl.Variable("acme/mobile", "AWS_ACCESS_KEY_ID", "production")
		glSecret, _ := w.gl.Variable("acme/mobile", "AWS_SECRET_ACCESS_KEY", "production")
		if glID.Value != k.AccessKeyId || glSecret.Value != k.SecretAccessKey || !glSecret.Masked || !glSecret.Protected {
			t.Fatalf("GitLab holds %+v, the vault %s", glID, k.AccessKeyId)
		}

		st := w.env.must(t, 0, "", "status", "--output", "json").stdout
		for _, target := range []string{"github_actions:acme/deploy/environments/production", "gitlab_ci:projects/acme/mobile@production",
			"credentials_file:" + w.credsFile + "[app]", "exec:vendor"} {
			if !regexp.MustCompile(regexp.QuoteMeta(`"target":"`+target+`","access_key_id":"`) + `AKIA[A-Z0-9]+","delivered_at":"[^"]+","holds_current":true`).MatchString(st) {
				t.Fatalf("status does not show %s holding the current key:\n%s", target, st)
			}
		}
		check := w.env.must(t, 0, "", "deliver", "--check", "--user", "alice", "--user", "bob")
		for _, want := range []string{"credentials_file:" + w.credsFile + "[app]", "exec:vendor", "github_actions:acme/deploy/environments/production", "gitlab_ci:projects/acme/mobile@production",
			"GitHub never returns a secret's value; judged from Keyward's delivery record: given " + k.AccessKeyId,
			"a command keeps what it is given"} {
			if !strings.Contains(check.stdout, want) {
				t.Fatalf("deliver --check does not say %q:\n%s", want, check.stdout)
			}
		}
		// Someone writes bob's secret by hand, later: --check finds it, --repair puts it right.
		w.gh.SetSecret(root, "AWS_SECRET_ACCESS_KEY", "typed-by-hand", time.Now().Add(5*time.Minute))
		r := w.env.must(t, 1, "", "deliver", "--check", "--user", "bob")
		if !strings.Contains(r.stdout, "by someone else") {
			t.Fatalf("a secret written by hand:\n%s", r.stdout)
		}
		w.env.must(t, 0, "", "deliver", "--repair", "--user", "bob")
		if sec, _ := w.gh.Secret(root, "AWS_SECRET_ACCESS_KEY"); sec.Value != k.SecretAccessKey {
			t.Fatal("--repair did not write the secret again")
		}

		// carol's command refuses the key, erin's never answers, dave's token may not write secrets: each rotation is rolled
		// back, the old key current and active, the error naming the target and what is missing.
		for user, want := range map[string]string{"carol": "exit status 3", "dave": `Secrets: read and write`,
			"erin": "did not finish within 1s (killed)"} {
			r := w.env.run(t, "", "rotate", "--once", "--user", user, "--force", "--output", "json")
			if r.code != 1 || !strings.Contains(r.stdout+r.stderr, want) {
				t.Fatalf("%s's refused delivery: exit %d\n%s\n%s", user, r.code, r.stdout, r.stderr)
			}
			if got := w.env.must(t, 0, "", "vault", "list", "--output", "json").stdout; !strings.Contains(got, pre[user]) {
				t.Fatalf("%s's old key is not in the vault any more", user)
			}
			keys, err := w.iam.ListAccessKeys(context.Background(), &iam.ListAccessKeysInput{UserName: aws.String(user)})
			if err != nil || len(keys.AccessKeyMetadata) != 1 || aws.ToString(keys.AccessKeyMetadata[0].AccessKeyId) != pre[user] ||
				keys.AccessKeyMetadata[0].Status != "Active" {
				t.Fatalf("%s's keys after the roll-back: %+v %v", user, keys, err)
			}
		}
		if _, written := w.gh.Secret("repos/acme/deploy", "AWS_ACCESS_KEY_ID"); written {
			t.Fatal("a token without the permission wrote a secret")
		}

		// Bad configuration is refused by config check, naming the field.
		for conf, want := range map[string]string{
			`[{match: {user: alice}, kind: github_actions, repository: acme/deploy, path: /tmp/x, token_file: /t}]`:             "delivery.targets[0].path: a setting of credentials_file targets, not of github_actions",
			`[{match: {user: "*"}, kind: gitlab_ci, project: acme/mobile, token_file: /t}]`:                                     "delivery.targets[0].match: matches several users but names one place",
			`[{match: {user: a}, kind: exec, command: [x]}, {match: {user: b}, kind: exec, command: [y], name: x}]`:             "delivery.targets[1]: names the same place as delivery.targets[0]",
			`[{match: {user: alice}, kind: github_actions, repository: "not a repo", token_file: /t}]`:                          "delivery.targets[0].repository",
			`[{match: {user: alice}, kind: gitlab_ci, project: acme/mobile, token_env: NO_SUCH_VARIABLE}]`:                      "delivery.targets[0].token_env: environment variable NO_SUCH_VARIABLE is not set",
			`[{match: {user: alice}, kind: credentials_file, path: relative/credentials}]`:                                      "delivery.targets[0].path",
			`[{match: {user: alice}, kind: github_actions, repository: a/b, token_file: /t, names: {access_key_id: GITHUB_X}}]`: "delivery.targets[0].names",
		} {
			r := w.env.with("KEYWARD_DELIVERY_TARGETS="+conf).run(t, "", "config", "check")
			if r.code != 2 || !strings.Contains(r.stderr, want) {
				t.Errorf("config check of %s: exit %d, want %q in\n%s", conf, r.code, want, r.stderr)
			}
		}
		logs := w.env.must(t, 0, "", "audit", "export").stdout
		if strings.Contains(logs, k.SecretAccessKey) || strings.Contains(r.stdout+r.stderr, k.SecretAccessKey) {
			t.Fatal("a secret reached the audit trail or the output")
		}
	})
}

// TestKillDuringHostDelivery kills keyward (SIGKILL) between the credentials file's temporary write
// and its rename, and at each step of delivery: the file is whole (the old profile, or the new
// one), and the next pass finishes the rotation with every target holding the vault's key.
func TestKillDuringHostDelivery(t *testing.T) {
	// Every point on SQLite; on PostgreSQL the two whose recovery reads what the database recorded
	// of the delivery (the others are the same steps of the engine, and each kill costs seconds).
	points := map[string][]string{"sqlite": {"credentials_file.rename", "deliver", "staged", "delivered"},
		"postgres": {"credentials_file.rename", "staged"}}
	for _, driver := range []string{"sqlite", "postgres"} {
		for _, point := range points[driver] {
			t.Run(driver+"/"+point, func(t *testing.T) {
				db := testenv.Database{Driver: "sqlite", DSN: filepath.Join(t.TempDir(), "k.db")}
				if driver == "postgres" {
					db = testenv.Database{Driver: "postgres", DSN: testenv.PostgresDSN(t)}
				}
				killDuringHostDelivery(t, db, point)
			})
		}
	}
}

// killDuringHostDelivery is one kill of TestKillDuringHostDelivery.
func killDuringHostDelivery(t *testing.T, db testenv.Database, point string) {
	w := newHostWorld(t, db)
	w.addUsers(t, "alice", "bob")
	w.env.killedAt(t, point, "rotate", "--once", "--user", "alice", "--user", "bob", "--force")
	raw, _ := os.ReadFile(w.credsFile)
	if !strings.HasPrefix(string(raw), otherProfiles) {
		t.Fatalf("the credentials file after a kill at %s:\n%s", point, raw)
	}
	w.env.must(t, 0, "", "rotate", "--once")
	profileWorks(t, *w.admin.BaseEndpoint, w.credsFile, "app", "alice")
	if left, _ := filepath.Glob(filepath.Join(w.dir, ".keyward-tmp-*")); len(left) != 0 {
		t.Fatalf("temporary files left after recovery: %v", left)
	}
	bob := w.env.vaultKey(t, "bob")
	if id, _ := w.gh.Secret("repos/acme/deploy/environments/production", "AWS_ACCESS_KEY_ID"); id.Value != bob.AccessKeyId {
		t.Fatalf("bob's secret after recovery holds %q, the vault %s", id.Value, bob.AccessKeyId)
	}
	w.env.must(t, 0, "", "deliver", "--check", "--user", "alice", "--user", "bob")
}
