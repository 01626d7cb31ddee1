package main

import (
	"context"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/keyward/keyward/internal/testenv"
)

// awsCLI runs the real AWS CLI against moto as the given key, and returns its output.
func awsCLI(t *testing.T, endpoint, keyID, secretKey string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command("aws", append([]string{"--endpoint-url", endpoint, "--region", "us-east-1", "--output", "text"}, args...)...)
	cmd.Env = append(baseVars(), "AWS_ACCESS_KEY_ID="+keyID, "AWS_SECRET_ACCESS_KEY="+secretKey, "AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null")
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// TestDeliveryToSecretsManager rotates with the real binary against moto (signatures checked) with
// a Secrets Manager target: a consumer reading AWSCURRENT with the AWS CLI gets the new key, and it
// works; status shows the target current; deliver --check finds a secret changed by hand, and
// --repair puts it right.
func TestDeliveryToSecretsManager(t *testing.T) {
	testenv.ForEachDatabase(t, func(t *testing.T, db testenv.Database) {
		ctx := context.Background()
		admin := testenv.MotoWithAdmin(t, 0, nil)
		adminIAM := iam.NewFromConfig(admin)
		if _, err := adminIAM.CreateUser(ctx, &iam.CreateUserInput{UserName: aws.String("alice")}); err != nil {
			t.Fatal(err)
		}
		if _, err := adminIAM.CreateAccessKey(ctx, &iam.CreateAccessKeyInput{UserName: aws.String("alice")}); err != nil {
			t.Fatal(err)
		}
		creds, _ := admin.Credentials.Retrieve(ctx)
		endpoint := *admin.BaseEndpoint
		e := newEnv(t, db).with(
			"AWS_ACCESS_KEY_ID="+creds.AccessKeyID, "AWS_SECRET_ACCESS_KEY="+creds.SecretAccessKey,
			"KEYWARD_AWS_REGION=us-east-1", "KEYWARD_AWS_ENDPOINT_URL="+endpoint, "KEYWARD_AWS_MAX_RPS=50",
			`KEYWARD_DELIVERY_TARGETS=[{match: {user: "alice"}, kind: secrets_manager, name: "keyward/{account}/{user}"}]`)
		const name = "keyward/123456789012/alice"

		e.must(t, 0, "", "rotate", "--once", "--user", "alice", "--force")
		// The consumer asks for AWSCURRENT by stage: moto 5.2.1 answers a request without one with
		// the secret's first version (AWS answers AWSCURRENT either way).
		value, err := awsCLI(t, endpoint, creds.AccessKeyID, creds.SecretAccessKey, "secretsmanager", "get-secret-value",
			"--secret-id", name, "--version-stage", "AWSCURRENT", "--query", "SecretString")
		if err != nil {
			t.Fatalf("aws secretsmanager get-secret-value: %v\n%s", err, value)
		}
		var key struct{ AccessKeyId, SecretAccessKey string }
		if err := json.Unmarshal([]byte(value), &key); err != nil || key.AccessKeyId == "" {
			t.Fatalf("the secret does not hold a key: %v", err)
		}
		vaultKey := e.must(t, 0, "", "vault", "get", "alice")
		if !strings.Contains(vaultKey.stdout, key.AccessKeyId) {
			t.Fatal("the secret does not hold the vault's current key")
		}
		who, err := awsCLI(t, endpoint, key.AccessKeyId, key.SecretAccessKey, "sts", "get-caller-identity", "--query", "Arn")
		if err != nil || !strings.HasSuffix(who, ":user/alice") {
			t.Fatalf("the delivered key does not work: %v %s", err, who)
		}

		st := e.must(t, 0, "", "status", "--output", "json")
		if !strings.Contains(st.stdout, `"target":"secrets_manager:us-east-1:`+name+`"`) || !strings.Contains(st.stdout, `"holds_current":true`) {
			t.Fatalf("status does not show the target current: %s", st.stdout)
		}
		e.must(t, 0, "", "deliver", "--check")

		// Someone changes the secret by hand: --check names it and exits 1; --repair puts it right.
		if _, err := secretsmanager.NewFromConfig(admin).PutSecretValue(ctx, &secretsmanager.PutSecretValueInput{SecretId: aws.String(name),
			SecretString: aws.String(`{"AccessKeyId":"AKIAHANDMADE00000000","SecretAccessKey":"x"}`)}); err != nil {
			t.Fatal(err)
		}
		r := e.must(t, 1, "", "deliver", "--check")
		if !strings.Contains(r.stdout, "AKIAHANDMADE00000000") || !strings.Contains(r.stderr, "aws:123456789012:alice secrets_manager:us-east-1:"+name) {
			t.Fatalf("check of a changed secret:\n%s\n%s", r.stdout, r.stderr)
		}
		r = e.must(t, 0, "", "deliver", "--repair", "--output", "json")
		if !strings.Contains(r.stdout, `"repaired":true`) {
			t.Fatalf("repair: %s", r.stdout)
		}
		e.must(t, 0, "", "deliver", "--check")
		for _, out := range []string{r.stdout, r.stderr, st.stdout, st.stderr} {
			if strings.Contains(out, key.SecretAccessKey) {
				t.Fatal("a secret reached the output or the logs")
			}
		}

		// Bad input.
		e.must(t, 2, "", "deliver")
		e.must(t, 2, "", "deliver", "--check", "--repair")
		e.must(t, 2, "", "deliver", "--check", "--account", "12")
		bad := e.with(`KEYWARD_DELIVERY_TARGETS=[{match: {user: "*"}, kind: vault, name: x}]`)
		if r := bad.must(t, 2, "", "config", "check"); !strings.Contains(r.stderr, "delivery.targets[0].kind") {
			t.Fatalf("config check of a bad target: %s", r.stderr)
		}
	})
}
