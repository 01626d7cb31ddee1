package rotation_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	iamtypes "github.com/aws/aws-sdk-go-v2/service/iam/types"

	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/cloud"
	"github.com/keyward/keyward/internal/cloud/awsiam"
	"github.com/keyward/keyward/internal/rotation"
	"github.com/keyward/keyward/internal/store"
	"github.com/keyward/keyward/internal/store/storetest"
	"github.com/keyward/keyward/internal/testenv"
	"github.com/keyward/keyward/internal/vault"
)

// motoEngine is the engine over the real AWS provider against a moto enforcing signatures, with
// real time and a short policy.
type motoEngine struct {
	e     *rotation.Engine
	iam   *iam.Client
	vault *vault.Vault
}

func newMotoEngine(t *testing.T, refuseSTS bool) *motoEngine {
	t.Helper()
	admin := testenv.MotoWithAdmin(t, 0, nil)
	providerCfg := admin.Copy()
	if refuseSTS {
		providerCfg.BaseEndpoint = aws.String(stsRefusingProxy(t, *admin.BaseEndpoint))
	}
	db := storetest.Open(t, testenv.Database{Driver: store.SQLite, DSN: filepath.Join(t.TempDir(), "k.db")})
	v := storetest.Vault(t, db, nil)
	pol := rotation.DefaultPolicy()
	pol.RotateAfter, pol.DeactivateAfter, pol.DeleteAfter, pol.VerifyTimeout = time.Hour, time.Second, time.Second, 2*time.Second
	e := rotation.New(rotation.Engine{Cloud: storetest.GuardCloud(t, awsiam.New(providerCfg, awsiam.Options{MaxRPS: 100})), Vault: v,
		Store: db.Rotations(), Policy: pol, Owner: "test", VerifyInterval: 50 * time.Millisecond, Audit: audit.New(db.Audit(), nil, nil)})
	return &motoEngine{e: e, iam: iam.NewFromConfig(admin), vault: v}
}

// stsRefusingProxy forwards to moto but refuses every STS call as AWS refuses a key that has not
// propagated yet (HTTP 403 InvalidClientTokenId), so verification of a new key fails.
func stsRefusingProxy(t *testing.T, moto string) string {
	t.Helper()
	target, _ := url.Parse(moto)
	proxy := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(strings.NewReader(string(body)))
		if strings.Contains(string(body), "Action=GetCallerIdentity") {
			w.Header().Set("Content-Type", "text/xml")
			w.WriteHeader(http.StatusForbidden)
			_, _ = w.Write([]byte(`<ErrorResponse><Error><Type>Sender</Type><Code>InvalidClientTokenId</Code><Message>The security token included in the request is invalid.</Message></Error><RequestId>keyward-test</RequestId></ErrorResponse>`))
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func (m *motoEngine) user(t *testing.T, name string, keys ...iamtypes.StatusType) []string {
	t.Helper()
	ctx := context.Background()
	if _, err := m.iam.CreateUser(ctx, &iam.CreateUserInput{UserName: aws.String(name)}); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, status := range keys {
		k, err := m.iam.CreateAccessKey(ctx, &iam.CreateAccessKeyInput{UserName: aws.String(name)})
		if err != nil {
			t.Fatal(err)
		}
		id := aws.ToString(k.AccessKey.AccessKeyId)
		if status == iamtypes.StatusTypeInactive {
			if _, err := m.iam.UpdateAccessKey(ctx, &iam.UpdateAccessKeyInput{UserName: aws.String(name), AccessKeyId: k.AccessKey.AccessKeyId, Status: status}); err != nil {
				t.Fatal(err)
			}
		}
		ids = append(ids, id)
	}
	return ids
}

func (m *motoEngine) visit(t *testing.T, name string, force bool) rotation.Result {
	t.Helper()
	r, err := m.e.Visit(context.Background(), cloud.User{AccountID: "123456789012", Name: name}, rotation.VisitOptions{Force: force})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (m *motoEngine) keys(t *testing.T, name string) map[string]iamtypes.StatusType {
	t.Helper()
	out, err := m.iam.ListAccessKeys(context.Background(), &iam.ListAccessKeysInput{UserName: aws.String(name)})
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]iamtypes.StatusType{}
	for _, k := range out.AccessKeyMetadata {
		keys[aws.ToString(k.AccessKeyId)] = k.Status
	}
	return keys
}

// TestLifecycleAgainstMoto: create → deactivate → delete with a policy in seconds, on AWS's API.
func TestLifecycleAgainstMoto(t *testing.T) {
	m := newMotoEngine(t, false)
	old := m.user(t, "alice", iamtypes.StatusTypeActive)[0]
	if r := m.visit(t, "alice", true); r.Outcome != rotation.Rotated {
		t.Fatalf("rotate: %+v", r)
	}
	cur, err := m.vault.Current(context.Background(), id("alice"))
	if err != nil {
		t.Fatal(err)
	}
	if k := m.keys(t, "alice"); len(k) != 2 || k[old] != iamtypes.StatusTypeActive || k[cur.AccessKeyID] != iamtypes.StatusTypeActive {
		t.Fatalf("after rotation: %v", k)
	}
	time.Sleep(1100 * time.Millisecond)
	if r := m.visit(t, "alice", false); r.Outcome != rotation.Deactivated {
		t.Fatalf("deactivate: %+v", r)
	}
	if k := m.keys(t, "alice"); k[old] != iamtypes.StatusTypeInactive {
		t.Fatalf("old key not inactive in AWS: %v", k)
	}
	time.Sleep(1100 * time.Millisecond)
	if r := m.visit(t, "alice", false); r.Outcome != rotation.Deleted {
		t.Fatalf("delete: %+v", r)
	}
	if k := m.keys(t, "alice"); len(k) != 1 || k[cur.AccessKeyID] != iamtypes.StatusTypeActive {
		t.Fatalf("after deletion AWS holds %v; want only the current key", k)
	}
	versions, _ := m.vault.VersionsOf(context.Background(), id("alice"))
	if versions[0].State != vault.StateDestroyed || versions[0].HasSecret {
		t.Fatalf("the deleted key's version: %+v", versions[0])
	}
}

// TestTwoKeysAgainstMoto: two active keys, or an inactive key Keyward did not retire, block the user.
func TestTwoKeysAgainstMoto(t *testing.T) {
	m := newMotoEngine(t, false)
	m.user(t, "twoactive", iamtypes.StatusTypeActive, iamtypes.StatusTypeActive)
	m.user(t, "foreign", iamtypes.StatusTypeActive, iamtypes.StatusTypeInactive)
	for _, name := range []string{"twoactive", "foreign"} {
		before := m.keys(t, name)
		if r := m.visit(t, name, true); r.Outcome != rotation.Blocked {
			t.Fatalf("%s: %+v", name, r)
		}
		if after := m.keys(t, name); len(after) != len(before) {
			t.Fatalf("%s: keys changed while blocked: %v → %v", name, before, after)
		}
	}
}

// TestVerificationFailureAgainstMoto: the new key is refused by STS; it is deleted from AWS, its
// version destroyed, and the old key left active.
func TestVerificationFailureAgainstMoto(t *testing.T) {
	m := newMotoEngine(t, true)
	old := m.user(t, "alice", iamtypes.StatusTypeActive)[0]
	r := m.visit(t, "alice", true)
	if r.Outcome != rotation.Failed || !strings.Contains(r.Reason, "verification failed") {
		t.Fatalf("visit: %+v", r)
	}
	if k := m.keys(t, "alice"); len(k) != 1 || k[old] != iamtypes.StatusTypeActive {
		t.Fatalf("after rollback AWS holds %v; want only the old key, active", k)
	}
	versions, _ := m.vault.VersionsOf(context.Background(), id("alice"))
	if len(versions) != 2 || versions[0].State != vault.StateCurrent || versions[1].State != vault.StateDestroyed {
		t.Fatalf("vault after rollback: %+v", versions)
	}
}
