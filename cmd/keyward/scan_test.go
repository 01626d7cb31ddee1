package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	iamtypes "github.com/aws/aws-sdk-go-v2/service/iam/types"
)

// gitIn runs git in dir as a test user.
func gitIn(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-C", dir}, args...)...)
	cmd.Env = append(baseVars(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestScan: keyward scan with the binary — a directory, a git history, the pre-commit hook, and with
// a Keyward configuration at hand (moto, signatures checked) whose keys the findings are.
func TestScan(t *testing.T) {
	ctx := context.Background()
	w := newMotoWorld(t)
	pre := w.addUsers(t, "alice", "bob")
	if _, err := w.iam.TagUser(ctx, &iam.TagUserInput{UserName: aws.String("bob"), Tags: []iamtypes.Tag{{Key: aws.String("keyward:exempt"), Value: aws.String("true")}}}); err != nil {
		t.Fatal(err)
	}
	e := w.env
	e.must(t, 0, "", "rotate", "--once", "--user", "alice", "--force")
	e.must(t, 0, "", "team", "add", "payments", "--iam-user", "alice", "--account", "123456789012")
	var cur struct{ AccessKeyId, SecretAccessKey string }
	_ = json.Unmarshal([]byte(e.must(t, 0, "", "vault", "get", "alice").stdout), &cur)

	repo := t.TempDir()
	if out, err := gitIn(t, repo, "init", "-q", "-b", "main"); err != nil {
		t.Fatal(out)
	}
	_ = os.WriteFile(filepath.Join(repo, "README.md"), []byte("hello\n"), 0o644)
	_ = os.WriteFile(filepath.Join(repo, "ci.env"), []byte("AWS_ACCESS_KEY_ID="+cur.AccessKeyId+"\nAWS_SECRET_ACCESS_KEY="+cur.SecretAccessKey+"\n"), 0o644)
	_ = os.WriteFile(filepath.Join(repo, "old.txt"), []byte("legacy "+pre["bob"]+"\n"), 0o644)
	for _, args := range [][]string{{"add", "."}, {"commit", "-q", "-m", "keys"}} {
		if out, err := gitIn(t, repo, args...); err != nil {
			t.Fatal(out)
		}
	}

	// With the configuration at hand (the test's environment is Keyward's), findings are named.
	r := e.must(t, 1, "", "scan", repo)
	for _, want := range []string{"ci.env:1: AWS access key id " + cur.AccessKeyId[:8] + "… — team payments, IAM user alice in 123456789012, current: the key in use now",
		"ci.env:2: AWS secret access key (not shown) of " + cur.AccessKeyId[:8] + "…",
		"old.txt:1: AWS access key id " + pre["bob"][:8] + "… — IAM user bob in 123456789012, active: not managed by Keyward"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("scan output lacks %q:\n%s", want, r.stdout)
		}
	}
	for _, out := range []string{r.stdout, r.stderr} {
		if strings.Contains(out, cur.SecretAccessKey) || strings.Contains(out, cur.AccessKeyId) || strings.Contains(out, pre["bob"]) {
			t.Fatal("scan printed a secret or a whole key id")
		}
	}
	r = e.must(t, 1, "", "scan", repo, "--git-history", "--format", "json", "--offline")
	var doc struct {
		Findings []struct {
			File, Commit, Rule string
			Owner              any
		}
	}
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil || len(doc.Findings) != 3 || doc.Findings[0].Commit == "" || doc.Findings[0].Owner != nil {
		t.Fatalf("history as JSON: %v %s", err, r.stdout)
	}
	if r = e.must(t, 1, "", "scan", repo, "--format", "sarif", "--offline"); !strings.Contains(r.stdout, `"version": "2.1.0"`) {
		t.Fatalf("sarif: %s", r.stdout)
	}

	// The pre-commit hook refuses a commit that adds a key, and lets a clean one through.
	e.must(t, 0, "", "scan", "install-hook", "--repo", repo)
	e.must(t, 2, "", "scan", "install-hook", "--repo", repo) // exists: not overwritten
	_ = os.WriteFile(filepath.Join(repo, "new.yml"), []byte("key: "+pre["alice"]+"\n"), 0o644)
	_, _ = gitIn(t, repo, "add", "new.yml")
	if out, err := gitIn(t, repo, "commit", "-q", "-m", "another key"); err == nil || !strings.Contains(out, "new.yml:1") {
		t.Fatalf("the hook let a key through: %v\n%s", err, out)
	}
	_ = os.WriteFile(filepath.Join(repo, "new.yml"), []byte("key: from the vault\n"), 0o644)
	_, _ = gitIn(t, repo, "add", "new.yml")
	if out, err := gitIn(t, repo, "commit", "-q", "-m", "clean"); err != nil {
		t.Fatalf("the hook refused a clean commit: %v\n%s", err, out)
	}

	// Clean and bad input.
	clean := t.TempDir()
	_ = os.WriteFile(filepath.Join(clean, "a.txt"), []byte("AKIAIOSFODNN7EXAMPLE is AWS's example\n"), 0o644)
	e.must(t, 0, "", "scan", clean, "--offline")
	e.must(t, 2, "", "scan", filepath.Join(clean, "missing"))
	e.must(t, 2, "", "scan", clean, "--git-history")
	e.must(t, 2, "", "scan", clean, "--staged", "--git-history")
	e.must(t, 2, "", "scan", clean, "--format", "xml")
}
