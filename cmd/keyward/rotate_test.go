package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	iamtypes "github.com/aws/aws-sdk-go-v2/service/iam/types"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/keyward/keyward/internal/testenv"
)

// TestRotateOnceAgainstMoto rotates a user's key with the real binary against moto enforcing
// request signing, then checks with AWS's own API that the new key works and the old one is intact.
func TestRotateOnceAgainstMoto(t *testing.T) {
	ctx := context.Background()
	admin := testenv.MotoWithAdmin(t, 0, nil)
	adminIAM := iam.NewFromConfig(admin)
	for _, u := range []struct {
		name string
		tags []iamtypes.Tag
	}{
		{"alice", nil},
		{"badtag", []iamtypes.Tag{{Key: aws.String("keyward:rotate-after"), Value: aws.String("soon")}}},
	} {
		if _, err := adminIAM.CreateUser(ctx, &iam.CreateUserInput{UserName: aws.String(u.name), Tags: u.tags}); err != nil {
			t.Fatal(err)
		}
	}
	old, err := adminIAM.CreateAccessKey(ctx, &iam.CreateAccessKeyInput{UserName: aws.String("alice")})
	if err != nil {
		t.Fatal(err)
	}
	creds, _ := admin.Credentials.Retrieve(ctx)
	e := newEnv(t, testenv.Database{Driver: "sqlite", DSN: filepath.Join(t.TempDir(), "k.db")}).with(
		"AWS_ACCESS_KEY_ID="+creds.AccessKeyID, "AWS_SECRET_ACCESS_KEY="+creds.SecretAccessKey,
		"KEYWARD_AWS_REGION=us-east-1", "KEYWARD_AWS_ENDPOINT_URL="+*admin.BaseEndpoint, "KEYWARD_AWS_MAX_RPS=50")

	// Dry run: says what it would do, changes nothing.
	r := e.must(t, 0, "", "rotate", "--once", "--dry-run", "--user", "alice", "--force", "--output", "json")
	var rep struct {
		DryRun  bool           `json:"dry_run"`
		Summary map[string]int `json:"summary"`
		Users   []struct {
			Identity struct {
				UserName string `json:"user_name"`
			} `json:"identity"`
			Outcome string `json:"outcome"`
			Reason  string `json:"reason"`
			Actions []struct {
				Action string `json:"action"`
				KeyID  string `json:"access_key_id"`
			} `json:"actions"`
		} `json:"users"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil || !rep.DryRun || rep.Summary["rotated"] != 1 || rep.Users[0].Actions[0].Action != "would_rotate" {
		t.Fatalf("dry run: %s (%v)", r.stdout, err)
	}
	if keys, _ := adminIAM.ListAccessKeys(ctx, &iam.ListAccessKeysInput{UserName: aws.String("alice")}); len(keys.AccessKeyMetadata) != 1 {
		t.Fatal("the dry run created a key")
	}

	r = e.must(t, 0, "", "rotate", "--once", "--user", "alice", "--force", "--output", "json")
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil || rep.Summary["rotated"] != 1 || rep.Summary["scanned"] != 1 {
		t.Fatalf("rotate: %s (%v)\n%s", r.stdout, err, r.stderr)
	}
	got := e.must(t, 0, "", "vault", "get", "alice")
	var cred map[string]string
	if err := json.Unmarshal([]byte(got.stdout), &cred); err != nil || cred["AccessKeyId"] == aws.ToString(old.AccessKey.AccessKeyId) {
		t.Fatalf("vault get after rotation: %s", got.stdout)
	}
	// The new key works with AWS's API, signed for real.
	newCfg := admin.Copy()
	newCfg.Credentials = credentials.NewStaticCredentialsProvider(cred["AccessKeyId"], cred["SecretAccessKey"], "")
	who, err := sts.NewFromConfig(newCfg).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil || !strings.HasSuffix(aws.ToString(who.Arn), ":user/alice") {
		t.Fatalf("the new key does not work: %v", err)
	}
	keys, err := adminIAM.ListAccessKeys(ctx, &iam.ListAccessKeysInput{UserName: aws.String("alice")})
	if err != nil || len(keys.AccessKeyMetadata) != 2 {
		t.Fatalf("keys after rotation: %+v %v", keys, err)
	}
	for _, k := range keys.AccessKeyMetadata {
		if k.Status != iamtypes.StatusTypeActive {
			t.Fatalf("key %s is %s: the old key must stay active until its grace period ends", aws.ToString(k.AccessKeyId), k.Status)
		}
	}

	st := e.must(t, 0, "", "status", "--output", "json")
	if !strings.Contains(st.stdout, `"next_action":"deactivate"`) || !strings.Contains(st.stdout, aws.ToString(old.AccessKey.AccessKeyId)) {
		t.Fatalf("status after rotation: %s", st.stdout)
	}

	// A user that fails makes the command exit 1, naming it.
	r = e.must(t, 1, "", "rotate", "--once")
	if !strings.Contains(r.stderr, "aws:123456789012:badtag") || !strings.Contains(r.stdout, "keyward:rotate-after") {
		t.Fatalf("failed user not named:\nstdout: %s\nstderr: %s", r.stdout, r.stderr)
	}
	for _, s := range []string{cred["SecretAccessKey"], creds.SecretAccessKey} {
		if strings.Contains(r.stderr+r.stdout+st.stdout+st.stderr, s) {
			t.Fatal("a secret reached the output or the logs")
		}
	}

	// Bad input.
	e.must(t, 2, "", "rotate")
	e.must(t, 2, "", "rotate", "--once", "--force")
	e.must(t, 2, "", "rotate", "--once", "--account", "12")
	e.must(t, 2, "", "rotate", "--once", "--user", "bad/name")
}
