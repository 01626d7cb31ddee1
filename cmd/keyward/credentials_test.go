package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iam"
)

// consumer runs a program as a consumer machine would: no AWS credentials in its environment, only
// the AWS config file that names keyward credentials as its credential_process.
func consumer(t *testing.T, awsConfig string, name string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(name, args...)
	// HOME is the configuration's directory: a credential_process line's ~ is expanded there.
	cmd.Env = append(baseVars(), "AWS_CONFIG_FILE="+awsConfig, "AWS_SHARED_CREDENTIALS_FILE=/dev/null", "HOME="+filepath.Dir(awsConfig))
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// TestCredentialProcess: a profile whose credential_process is `keyward credentials` makes the real
// AWS CLI and boto3 sign as the team's IAM user against moto (signatures checked); session
// credentials come from one STS call however many times they are fetched; errors are plain, on
// stderr, exit 1, and never show the API key.
func TestCredentialProcess(t *testing.T) {
	ctx := context.Background()
	w := newMotoWorld(t, "KEYWARD_CLOUD=aws", `KEYWARD_AWS_ACCOUNTS=[{id: "123456789012"}]`)
	e := w.env
	if _, err := w.iam.CreateUser(ctx, &iam.CreateUserInput{UserName: aws.String("payments-app")}); err != nil {
		t.Fatal(err)
	}
	// AWS asks no permission for GetSessionToken; moto, evaluating policies, wants one.
	if _, err := w.iam.PutUserPolicy(ctx, &iam.PutUserPolicyInput{UserName: aws.String("payments-app"), PolicyName: aws.String("sessions"),
		PolicyDocument: aws.String(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"sts:GetSessionToken","Resource":"*"}]}`)}); err != nil {
		t.Fatal(err)
	}
	e.must(t, 0, "", "team", "add", "payments", "--iam-user", "payments-app", "--account", "123456789012")
	// As the README says: `keyward apikey create … > ci.key` makes the file --api-key-file reads (the
	// key alone on standard output, the explanation on standard error).
	created := e.must(t, 0, "", "apikey", "create", "--name", "ci", "--role", "member", "--team", "payments")
	apiKey := struct{ Key string }{strings.TrimSpace(created.stdout)}
	if strings.Count(created.stdout, "\n") != 1 || !strings.HasPrefix(apiKey.Key, "kw_") || !strings.Contains(created.stderr, "shown only now") {
		t.Fatalf("apikey create: stdout %q, stderr %q", created.stdout, created.stderr)
	}
	home := t.TempDir()
	keyFile := filepath.Join(home, "ci.key")
	if err := os.WriteFile(keyFile, []byte(created.stdout), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startServe(t, e)
	server := "http://" + p.addr
	moto := *w.admin.BaseEndpoint

	// The profile names the file with ~, which no shell expands for credential_process.
	awsConfig := filepath.Join(home, "config")
	profile := fmt.Sprintf("[profile payments]\nregion = us-east-1\ncredential_process = %s credentials payments --server %s --api-key-file ~/ci.key --type key\n",
		binary, server)
	if err := os.WriteFile(awsConfig, []byte(profile), 0o600); err != nil {
		t.Fatal(err)
	}
	arn, err := consumer(t, awsConfig, "aws", "--profile", "payments", "--endpoint-url", moto, "sts", "get-caller-identity", "--query", "Arn", "--output", "text")
	if err != nil || !strings.HasSuffix(arn, ":user/payments-app") {
		t.Fatalf("aws sts get-caller-identity through credential_process: %v\n%s", err, arn)
	}
	arn, err = consumer(t, awsConfig, "python3", "-c", fmt.Sprintf(
		"import boto3; print(boto3.Session(profile_name='payments').client('sts', endpoint_url=%q).get_caller_identity()['Arn'])", moto))
	if err != nil || !strings.HasSuffix(arn, ":user/payments-app") {
		t.Fatalf("boto3 through credential_process: %v\n%s", err, arn)
	}

	// A file that is not an API key (the sentence of an older apikey create on its first line) is
	// refused, naming the file and what it should hold.
	bad := filepath.Join(home, "bad.key")
	if err := os.WriteFile(bad, []byte("This is API key ci (member); it is shown only now.\n"+apiKey.Key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := e.run(t, "", "credentials", "payments", "--server", server, "--api-key-file", bad); r.code == 0 ||
		!strings.Contains(r.stderr, bad+": the first line is not an API key") || strings.Contains(r.stderr, apiKey.Key) {
		t.Fatalf("a malformed key file: %d %s", r.code, r.stderr)
	}

	// Sessions: fetched twenty times (ten at once), made once. (moto's session credentials are
	// placeholders that moto itself refuses: their use is tested on the simulated cloud.)
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			r := e.run(t, "", "credentials", "payments", "--server", server, "--api-key-file", keyFile)
			if r.code != 0 || !strings.Contains(r.stdout, `"SessionToken":"`) || !strings.Contains(r.stdout, `"Version":1`) {
				t.Errorf("session: %d %s %s", r.code, r.stdout, r.stderr)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.Fatalf("serve's log:\n%s", p.logs.String())
	}
	for range 10 {
		e.with("KEYWARD_API_KEY="+apiKey.Key).must(t, 0, "", "credentials", "payments", "--server", server, "--output", "env", "--duration", "1h")
	}
	if code, body := httpGet(t, server+"/metrics"); code != 200 || !strings.Contains(body, `keyward_cloud_api_calls_total{operation="SessionToken",outcome="ok"} 1`) {
		t.Fatalf("STS calls for 20 session reads, want 1:\n%s", grepLines(body, "SessionToken"))
	}

	// Errors: exit 1 with the server's words on stderr, never the key; bad input exit 2.
	wrong := filepath.Join(t.TempDir(), "wrong.key")
	_ = os.WriteFile(wrong, []byte("kw_wrong_key_0123456789"), 0o600)
	r := e.must(t, 1, "", "credentials", "payments", "--server", server, "--api-key-file", wrong)
	if !strings.Contains(r.stderr, "keyward answered 401") || strings.Contains(r.stderr+r.stdout, "kw_wrong_key_0123456789") {
		t.Fatalf("wrong key: %q", r.stderr)
	}
	r = e.must(t, 1, "", "credentials", "search", "--server", server, "--api-key-file", keyFile)
	if !strings.Contains(r.stderr, "keyward answered 403") || strings.Contains(r.stderr, apiKey.Key) {
		t.Fatalf("another team: %q", r.stderr)
	}
	r = e.must(t, 2, "", "credentials", "payments", "--server", "http://10.1.2.3:8080", "--api-key-file", keyFile)
	if !strings.Contains(r.stderr, "loopback") {
		t.Fatalf("plain http to another host: %q", r.stderr)
	}
	e.must(t, 2, "", "credentials", "payments", "--server", server)
	e.must(t, 2, "", "credentials", "payments", "--server", server, "--api-key-file", filepath.Join(t.TempDir(), "missing"))
	e.must(t, 2, "", "credentials", "payments", "--server", server, "--api-key-file", keyFile, "--type", "forever")
	e.must(t, 2, "", "credentials", "payments", "--server", server, "--api-key-file", keyFile, "--type", "key", "--duration", "1h")
	r = e.must(t, 1, "", "credentials", "payments", "--server", server, "--api-key-file", keyFile, "--duration", "5m")
	if !strings.Contains(r.stderr, `duration "5m"`) {
		t.Fatalf("a bad duration: %q", r.stderr)
	}
	if strings.Contains(p.logs.String(), apiKey.Key) {
		t.Fatal("the API key reached serve's log")
	}
}

func grepLines(text, substr string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
