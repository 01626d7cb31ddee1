package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	iamtypes "github.com/aws/aws-sdk-go-v2/service/iam/types"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/keyward/keyward/internal/testenv"
)

var (
	faultBinary     string
	faultBinaryOnce sync.Once
	faultBinaryErr  error
)

// faultyKeyward builds, once, a keyward whose engine kills itself at KEYWARD_FAULT_KILL_AT.
func faultyKeyward(t *testing.T) string {
	t.Helper()
	faultBinaryOnce.Do(func() {
		faultBinary = filepath.Join(filepath.Dir(binary), "keyward-faults")
		build := exec.Command("go", "build", "-race", "-tags", "keywardfaults", "-o", faultBinary, ".")
		out, err := build.CombinedOutput()
		if err != nil {
			faultBinaryErr = fmt.Errorf("%v\n%s", err, out)
		}
	})
	if faultBinaryErr != nil {
		t.Fatalf("build the fault-injecting keyward: %v", faultBinaryErr)
	}
	return faultBinary
}

// killedAt runs the fault-injecting binary and expects it to die by SIGKILL.
func (e *env) killedAt(t *testing.T, point string, args ...string) {
	t.Helper()
	cmd := exec.Command(faultyKeyward(t), args...)
	cmd.Dir, cmd.Env = e.dir, append(append([]string{}, e.vars...), "KEYWARD_FAULT_KILL_AT="+point)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("keyward was not killed at %q: %v\n%s", point, err, out)
	}
}

// motoWorld is a moto enforcing signatures, an admin to inspect it, and a keyward environment.
type motoWorld struct {
	admin aws.Config
	iam   *iam.Client
	env   *env
}

func newMotoWorld(t *testing.T, extraVars ...string) *motoWorld {
	t.Helper()
	return newMotoWorldOn(t, testenv.Database{Driver: "sqlite", DSN: filepath.Join(t.TempDir(), "k.db")}, extraVars...)
}

// newMotoWorldOn is newMotoWorld on a database of the test's choice.
func newMotoWorldOn(t *testing.T, db testenv.Database, extraVars ...string) *motoWorld {
	t.Helper()
	admin := testenv.MotoWithAdmin(t, 0, nil)
	creds, err := admin.Credentials.Retrieve(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, db).with(append([]string{
		"AWS_ACCESS_KEY_ID=" + creds.AccessKeyID, "AWS_SECRET_ACCESS_KEY=" + creds.SecretAccessKey,
		"KEYWARD_AWS_REGION=us-east-1", "KEYWARD_AWS_ENDPOINT_URL=" + *admin.BaseEndpoint, "KEYWARD_AWS_MAX_RPS=200",
		"KEYWARD_ROTATION_VERIFY_INTERVAL=50ms",
	}, extraVars...)...)
	return &motoWorld{admin: admin, iam: iam.NewFromConfig(admin), env: e}
}

func (w *motoWorld) addUsers(t *testing.T, names ...string) map[string]string {
	t.Helper()
	ctx := context.Background()
	keys := map[string]string{}
	for _, n := range names {
		if _, err := w.iam.CreateUser(ctx, &iam.CreateUserInput{UserName: aws.String(n)}); err != nil {
			t.Fatal(err)
		}
		k, err := w.iam.CreateAccessKey(ctx, &iam.CreateAccessKeyInput{UserName: aws.String(n)})
		if err != nil {
			t.Fatal(err)
		}
		keys[n] = aws.ToString(k.AccessKey.AccessKeyId)
		// The SDK retries a call whose answer was lost (moto under the whole suite's load can be slow):
		// a retried CreateAccessKey leaves the user a second key, and Keyward rightly blocks a user
		// with two active keys it does not know. The set-up keeps only the key it was given.
		listed, err := w.iam.ListAccessKeys(ctx, &iam.ListAccessKeysInput{UserName: aws.String(n)})
		if err != nil {
			t.Fatal(err)
		}
		for _, other := range listed.AccessKeyMetadata {
			if id := aws.ToString(other.AccessKeyId); id != keys[n] {
				t.Logf("%s: set-up made a second key %s (a retried call); deleting it", n, id)
				if _, err := w.iam.DeleteAccessKey(ctx, &iam.DeleteAccessKeyInput{UserName: aws.String(n), AccessKeyId: aws.String(id)}); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	return keys
}

// checkAfterRecovery asserts, for each user: exactly one current version, whose key works against
// moto and whose secret the vault holds; every key moto has for the user is one the vault accounts
// for; the pre-existing key is still active. It returns how many users were rotated.
func (w *motoWorld) checkAfterRecovery(t *testing.T, preexisting map[string]string) int {
	t.Helper()
	ctx := context.Background()
	var list struct {
		Identities []struct {
			UserName string `json:"user_name"`
			Versions []struct {
				AccessKeyID string `json:"access_key_id"`
				State       string `json:"state"`
				HasSecret   bool   `json:"has_secret"`
			} `json:"versions"`
		} `json:"identities"`
	}
	r := w.env.must(t, 0, "", "vault", "list", "--output", "json")
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil {
		t.Fatal(err)
	}
	rotated := 0
	seen := map[string]bool{}
	for _, id := range list.Identities {
		seen[id.UserName] = true
		known := map[string]bool{}
		current := 0
		for _, v := range id.Versions {
			if v.State != "destroyed" {
				known[v.AccessKeyID] = true
			}
			if v.State == "current" {
				current++
				if v.HasSecret {
					rotated++
				}
			}
		}
		if current != 1 {
			t.Fatalf("%s has %d current versions: %+v", id.UserName, current, id.Versions)
		}
		keys, err := w.iam.ListAccessKeys(ctx, &iam.ListAccessKeysInput{UserName: aws.String(id.UserName)})
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys.AccessKeyMetadata {
			if !known[aws.ToString(k.AccessKeyId)] {
				t.Fatalf("%s: key %s exists in the cloud but the vault cannot account for it", id.UserName, aws.ToString(k.AccessKeyId))
			}
			if aws.ToString(k.AccessKeyId) == preexisting[id.UserName] && k.Status != "Active" {
				t.Fatalf("%s: the pre-existing key was deactivated", id.UserName)
			}
		}
		got := w.env.must(t, 0, "", "vault", "get", id.UserName)
		var cred map[string]string
		if err := json.Unmarshal([]byte(got.stdout), &cred); err != nil {
			t.Fatal(err)
		}
		cfg := w.admin.Copy()
		cfg.Credentials = credentials.NewStaticCredentialsProvider(cred["AccessKeyId"], cred["SecretAccessKey"], "")
		if _, err := sts.NewFromConfig(cfg).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{}); err != nil {
			t.Fatalf("%s: the current key does not work: %v", id.UserName, err)
		}
	}
	for u := range preexisting {
		if !seen[u] {
			t.Fatalf("%s was never brought under management", u)
		}
	}
	return rotated
}

// TestKillAtEveryStep kills keyward with SIGKILL at each step of a rotation; a restarted keyward and
// a further pass must leave everything accounted for, nothing lost, and the rotation done.
func TestKillAtEveryStep(t *testing.T) {
	for _, point := range []string{"create", "created", "stored", "verify", "promote", "promoted"} {
		t.Run(point, func(t *testing.T) {
			w := newMotoWorld(t)
			pre := w.addUsers(t, "alice")
			w.env.killedAt(t, point, "rotate", "--once", "--user", "alice", "--force")
			// The restarted process sees the dead one's lease and takes the rotation over at once.
			r := w.env.must(t, 0, "", "rotate", "--once", "--output", "json")
			if strings.Contains(r.stdout, "in progress elsewhere") {
				t.Fatalf("the restart waited for a dead process's lease: %s", r.stdout)
			}
			w.env.must(t, 0, "", "rotate", "--once")
			if n := w.checkAfterRecovery(t, pre); n != 1 {
				t.Fatalf("alice was not rotated after the crash at %q", point)
			}
		})
	}
}

// TestKillDuringLargePass kills keyward at a random moment of a 200-user pass, then restarts it.
func TestKillDuringLargePass(t *testing.T) {
	w := newMotoWorld(t, "KEYWARD_ROTATION_ROTATE_AFTER=1s", "KEYWARD_ROTATION_CONCURRENCY=8")
	names := make([]string, 200)
	for i := range names {
		names[i] = fmt.Sprintf("svc-%03d", i)
	}
	pre := w.addUsers(t, names...)
	time.Sleep(1100 * time.Millisecond) // every key is now due

	cmd := exec.Command(faultyKeyward(t), "rotate", "--once")
	cmd.Dir, cmd.Env = w.env.dir, w.env.vars
	var out testenv.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Wait until some rotations are done, then kill at a random moment.
	deadline := time.Now().Add(60 * time.Second)
	for strings.Count(out.String(), "key rotated") < 10 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(time.Duration(rand.IntN(1500)) * time.Millisecond)
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()
	killedAfter := strings.Count(out.String(), "key rotated")
	if killedAfter >= len(names) {
		t.Fatalf("the pass finished before it could be killed (%d rotated)", killedAfter)
	}
	t.Logf("killed after %d of %d rotations", killedAfter, len(names))

	first := w.env.must(t, 0, "", "rotate", "--once", "--output", "json")
	second := w.env.must(t, 0, "", "rotate", "--once", "--output", "json")
	// Should a user be missing, say what each run said of it.
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, name := range names {
			if !strings.Contains(second.stdout, `"user_name":"`+name+`"`) {
				t.Logf("%s is not in the second pass's report", name)
			}
		}
		for _, line := range strings.Split(out.String(), "\n") {
			if strings.Contains(line, "svc-") && (strings.Contains(line, "WARN") || strings.Contains(line, "ERROR")) {
				t.Logf("killed run: %s", line)
			}
		}
		t.Logf("first pass after the kill:\n%s\nsecond:\n%s", first.stdout, second.stdout)
	})
	if n := w.checkAfterRecovery(t, pre); n != len(names) {
		t.Fatalf("%d of %d users rotated after recovery", n, len(names))
	}
}

// TestKillDuringDelivery kills keyward (SIGKILL) at each point of the delivery step against moto's
// Secrets Manager and Parameter Store: the restart finishes the rotation, both targets hold the
// vault's current key, and no second value was written (one version each: a retry sent the same
// request, under the same token).
func TestKillDuringDelivery(t *testing.T) {
	for _, point := range []string{"deliver", "staged", "delivered"} {
		t.Run(point, func(t *testing.T) {
			ctx := context.Background()
			w := newMotoWorld(t, `KEYWARD_DELIVERY_TARGETS=[{match: {user: "*"}, kind: secrets_manager, name: "keyward/{user}"}, `+
				`{match: {user: "*"}, kind: ssm_parameter, name: "/keyward/{user}", format: env}]`)
			pre := w.addUsers(t, "alice")
			w.env.killedAt(t, point, "rotate", "--once", "--user", "alice", "--force")
			w.env.must(t, 0, "", "rotate", "--once")
			if n := w.checkAfterRecovery(t, pre); n != 1 {
				t.Fatalf("alice was not rotated after the crash at %q", point)
			}
			w.env.must(t, 0, "", "deliver", "--check")
			versions, err := secretsmanager.NewFromConfig(w.admin).ListSecretVersionIds(ctx, &secretsmanager.ListSecretVersionIdsInput{SecretId: aws.String("keyward/alice")})
			if err != nil || len(versions.Versions) != 1 {
				t.Fatalf("secret versions after the crash at %s: %+v %v", point, versions, err)
			}
			hist, err := ssm.NewFromConfig(w.admin).GetParameterHistory(ctx, &ssm.GetParameterHistoryInput{Name: aws.String("/keyward/alice")})
			if err != nil || len(hist.Parameters) != 1 {
				t.Fatalf("parameter versions after the crash at %s: %+v %v", point, hist, err)
			}
		})
	}
}

// TestLeakAgainstMoto: keyward leak with the real binary against moto (signatures checked): a
// managed key is replaced and deactivated at once, even after a SIGKILL in the middle of its
// emergency rotation (the next pass finishes it); a key Keyward does not manage is named and left
// active unless --deactivate-unmanaged; bad input is exit 2.
func TestLeakAgainstMoto(t *testing.T) {
	ctx := context.Background()
	w := newMotoWorld(t)
	pre := w.addUsers(t, "alice", "bob", "carol")
	bobs := pre["bob"]
	delete(pre, "bob")
	// bob is exempt: Keyward never takes his key under management.
	if _, err := w.iam.TagUser(ctx, &iam.TagUserInput{UserName: aws.String("bob"), Tags: []iamtypes.Tag{{Key: aws.String("keyward:exempt"), Value: aws.String("true")}}}); err != nil {
		t.Fatal(err)
	}
	w.env.must(t, 0, "", "rotate", "--once", "--user", "alice", "--user", "carol", "--force")
	status := func(user, keyID string) string {
		keys, err := w.iam.ListAccessKeys(ctx, &iam.ListAccessKeysInput{UserName: aws.String(user)})
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys.AccessKeyMetadata {
			if aws.ToString(k.AccessKeyId) == keyID {
				return string(k.Status)
			}
		}
		return "deleted"
	}
	current := func(user string) string {
		var c struct{ AccessKeyId string }
		_ = json.Unmarshal([]byte(w.env.must(t, 0, "", "vault", "get", user).stdout), &c)
		return c.AccessKeyId
	}

	leaked := current("alice")
	r := w.env.must(t, 0, "", "leak", leaked, "--reason", "pushed to a public repository", "--output", "json")
	if !strings.Contains(r.stdout, `"inactive":true`) || status("alice", leaked) != "Inactive" || current("alice") == leaked {
		t.Fatalf("leak of alice's key: %s (IAM says %s)", r.stdout, status("alice", leaked))
	}

	// A crash in the middle of carol's emergency rotation: the next pass finishes it and deactivates.
	carols := current("carol")
	w.env.killedAt(t, "verify", "leak", carols)
	w.env.must(t, 0, "", "rotate", "--once")
	if st := status("carol", carols); st != "Inactive" {
		t.Fatalf("after a crash mid-response and a pass, carol's leaked key is %s", st)
	}
	if n := w.checkAfterRecovery(t, pre); n != 2 {
		t.Fatalf("%d users rotated, want alice and carol", n)
	}

	// bob's key is not Keyward's: named, told, left active without the rule.
	r = w.env.must(t, 1, "", "leak", bobs)
	if !strings.Contains(r.stdout, "aws:123456789012:bob") || !strings.Contains(r.stderr, "--deactivate-unmanaged") || status("bob", bobs) != "Active" {
		t.Fatalf("leak of an unmanaged key: %s %s", r.stdout, r.stderr)
	}
	w.env.must(t, 0, "", "leak", bobs, "--deactivate-unmanaged")
	if status("bob", bobs) != "Inactive" {
		t.Fatal("--deactivate-unmanaged left bob's key active")
	}
	for _, bad := range []string{"AKIA123", "not-a-key", "akiaiosfodnn7example"} {
		w.env.must(t, 2, "", "leak", bad)
	}
	w.env.must(t, 0, "", "audit", "verify")
}
