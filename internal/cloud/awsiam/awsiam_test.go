package awsiam_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	iamtypes "github.com/aws/aws-sdk-go-v2/service/iam/types"
	"github.com/aws/aws-sdk-go-v2/service/organizations"
	orgtypes "github.com/aws/aws-sdk-go-v2/service/organizations/types"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/keyward/keyward/internal/cloud"
	"github.com/keyward/keyward/internal/cloud/awsiam"
	"github.com/keyward/keyward/internal/secret"
	"github.com/keyward/keyward/internal/testenv"
)

const (
	mainAccount  = "123456789012" // moto's default account
	otherAccount = "111111111111"
	roleName     = "keyward"
	allowAll     = `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}`
	trustMain    = `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:root"},"Action":"sts:AssumeRole"}]}`
)

func awsConfig(endpoint, keyID, secretKey, token string) aws.Config {
	return aws.Config{
		Region:       "us-east-1",
		Credentials:  credentials.NewStaticCredentialsProvider(keyID, secretKey, token),
		BaseEndpoint: aws.String(endpoint),
	}
}

// bootstrap starts a moto of the test's own with an admin in the main account and, in the other
// account, a role the main account may assume; then moto enforces request signing.
func bootstrap(t *testing.T) aws.Config {
	t.Helper()
	return testenv.MotoWithAdmin(t, 3, func(anon aws.Config) {
		ctx := context.Background()
		role, err := sts.NewFromConfig(anon).AssumeRole(ctx, &sts.AssumeRoleInput{RoleArn: aws.String("arn:aws:iam::" + otherAccount + ":role/" + roleName), RoleSessionName: aws.String("setup")})
		if err != nil {
			t.Fatalf("bootstrap: %v", err)
		}
		c := role.Credentials
		otherIAM := iam.NewFromConfig(awsConfig(*anon.BaseEndpoint, aws.ToString(c.AccessKeyId), aws.ToString(c.SecretAccessKey), aws.ToString(c.SessionToken)))
		if _, err := otherIAM.CreateRole(ctx, &iam.CreateRoleInput{RoleName: aws.String(roleName), AssumeRolePolicyDocument: aws.String(trustMain)}); err != nil {
			t.Fatalf("bootstrap: %v", err)
		}
		if _, err := otherIAM.PutRolePolicy(ctx, &iam.PutRolePolicyInput{RoleName: aws.String(roleName), PolicyName: aws.String("all"), PolicyDocument: aws.String(allowAll)}); err != nil {
			t.Fatalf("bootstrap: %v", err)
		}
	})
}

func TestProviderAgainstMoto(t *testing.T) {
	ctx := context.Background()
	cfg := bootstrap(t)
	admin := iam.NewFromConfig(cfg)
	if _, err := admin.CreateUser(ctx, &iam.CreateUserInput{UserName: aws.String("alice"), Path: aws.String("/ci/"),
		Tags: []iamtypes.Tag{{Key: aws.String("keyward:rotate-after"), Value: aws.String("30d")}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CreateGroup(ctx, &iam.CreateGroupInput{GroupName: aws.String("ops")}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.AddUserToGroup(ctx, &iam.AddUserToGroupInput{GroupName: aws.String("ops"), UserName: aws.String("alice")}); err != nil {
		t.Fatal(err)
	}

	p := awsiam.New(cfg, awsiam.Options{MaxRPS: 50})
	accounts, err := p.Accounts(ctx)
	if err != nil || len(accounts) != 1 || accounts[0].ID != mainAccount {
		t.Fatalf("Accounts = %v, %v", accounts, err)
	}
	var users []cloud.User
	if err := p.ListUsers(ctx, mainAccount, func(u cloud.User) error { users = append(users, u); return nil }); err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(users, func(u cloud.User) bool { return u.Name == "alice" })
	if i < 0 || users[i].Path != "/ci/" || users[i].Tags["keyward:rotate-after"] != "30d" || users[i].ARN != "arn:aws:iam::123456789012:user/ci/alice" {
		t.Fatalf("ListUsers = %+v", users)
	}
	if u, err := p.GetUser(ctx, mainAccount, "alice"); err != nil || u.ARN != users[i].ARN || u.Path != "/ci/" || u.Tags["keyward:rotate-after"] != "30d" {
		t.Fatalf("GetUser = %+v, %v", u, err)
	}
	if _, err := p.GetUser(ctx, mainAccount, "nobody"); !errors.Is(err, cloud.ErrNoSuchEntity) {
		t.Fatalf("GetUser of nobody: %v", err)
	}
	if g, err := p.UserGroups(ctx, mainAccount, "alice"); err != nil || !slices.Equal(g, []string{"ops"}) {
		t.Fatalf("UserGroups = %v, %v", g, err)
	}

	k1, err := p.CreateAccessKey(ctx, mainAccount, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if arn, err := p.Verify(ctx, mainAccount, k1.ID, k1.Secret); err != nil || arn != users[i].ARN {
		t.Fatalf("Verify new key = %q, %v", arn, err)
	}
	if _, err := p.Verify(ctx, mainAccount, k1.ID, secret.New("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")); !errors.Is(err, cloud.ErrKeyRefused) {
		t.Fatalf("Verify with a wrong secret: %v", err)
	}
	if _, err := p.Verify(ctx, otherAccount, k1.ID, k1.Secret); !errors.Is(err, cloud.ErrKeyRefused) {
		t.Fatalf("Verify in the wrong account: %v", err)
	}
	if lu, err := p.AccessKeyLastUsed(ctx, mainAccount, k1.ID); err != nil || lu.At.IsZero() {
		t.Fatalf("last use after a verification: %+v, %v", lu, err)
	}
	// Session credentials are made with the key itself (moto's are placeholders it does not accept
	// back once signatures are checked: their use is tested on the simulated cloud). AWS asks no
	// permission for GetSessionToken; moto, evaluating policies, wants one.
	if _, err := admin.PutUserPolicy(ctx, &iam.PutUserPolicyInput{UserName: aws.String("alice"), PolicyName: aws.String("sessions"),
		PolicyDocument: aws.String(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"sts:GetSessionToken","Resource":"*"}]}`)}); err != nil {
		t.Fatal(err)
	}
	sess, err := p.SessionToken(ctx, mainAccount, k1.ID, k1.Secret, time.Hour)
	// (moto 5.2.1 answers a fixed placeholder key id, AKIAIOSFODNN7EXAMPLE, where AWS gives ASIA….)
	if err != nil || sess.AccessKeyID == "" || sess.SessionToken.IsZero() || sess.SecretAccessKey.IsZero() ||
		time.Until(sess.Expiration) < 50*time.Minute || time.Until(sess.Expiration) > 61*time.Minute {
		t.Fatalf("SessionToken = %+v, %v", sess, err)
	}
	if _, err := p.SessionToken(ctx, mainAccount, k1.ID, secret.New("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"), time.Hour); !errors.Is(err, cloud.ErrKeyRefused) {
		t.Fatalf("SessionToken with a wrong secret: %v", err)
	}

	k2, err := p.CreateAccessKey(ctx, mainAccount, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.CreateAccessKey(ctx, mainAccount, "alice"); !errors.Is(err, cloud.ErrLimitExceeded) {
		t.Fatalf("third key: %v", err)
	}
	if err := p.SetAccessKeyStatus(ctx, mainAccount, "alice", k1.ID, cloud.KeyInactive); err != nil {
		t.Fatal(err)
	}
	keys, err := p.ListAccessKeys(ctx, mainAccount, "alice")
	if err != nil || len(keys) != 2 {
		t.Fatalf("ListAccessKeys = %v, %v", keys, err)
	}
	for _, k := range keys {
		want := map[string]cloud.KeyStatus{k1.ID: cloud.KeyInactive, k2.ID: cloud.KeyActive}[k.ID]
		if k.Status != want || k.CreatedAt.IsZero() {
			t.Errorf("key %s: %+v, want status %s", k.ID, k, want)
		}
	}
	if err := p.DeleteAccessKey(ctx, mainAccount, "alice", k1.ID); err != nil {
		t.Fatal(err)
	}
	// A deleted key is refused (HTTP 403 from moto, as from AWS).
	if _, err := p.Verify(ctx, mainAccount, k1.ID, k1.Secret); !errors.Is(err, cloud.ErrKeyRefused) {
		t.Fatalf("Verify a deleted key: %v", err)
	}
	if err := p.DeleteAccessKey(ctx, mainAccount, "alice", k1.ID); !errors.Is(err, cloud.ErrNoSuchEntity) {
		t.Fatalf("delete twice: %v", err)
	}
	if _, err := p.ListAccessKeys(ctx, mainAccount, "nobody"); !errors.Is(err, cloud.ErrNoSuchEntity) {
		t.Fatalf("keys of a missing user: %v", err)
	}
}

// TestAssumedRoleInOtherAccount manages a user in a member account through the role configured for it.
func TestAssumedRoleInOtherAccount(t *testing.T) {
	ctx := context.Background()
	cfg := bootstrap(t)
	p := awsiam.New(cfg, awsiam.Options{Accounts: []awsiam.AccountConfig{
		{ID: otherAccount, RoleARN: "arn:aws:iam::" + otherAccount + ":role/" + roleName, ExternalID: "keyward-test"},
	}})
	accounts, err := p.Accounts(ctx)
	if err != nil || len(accounts) != 1 || accounts[0].ID != otherAccount {
		t.Fatalf("Accounts = %v, %v", accounts, err)
	}
	// Create the user through the same assumed role, then manage it through the provider.
	role, err := sts.NewFromConfig(cfg).AssumeRole(ctx, &sts.AssumeRoleInput{RoleArn: aws.String("arn:aws:iam::" + otherAccount + ":role/" + roleName), RoleSessionName: aws.String("test")})
	if err != nil {
		t.Fatal(err)
	}
	c := role.Credentials
	memberIAM := iam.NewFromConfig(awsConfig(*cfg.BaseEndpoint, aws.ToString(c.AccessKeyId), aws.ToString(c.SecretAccessKey), aws.ToString(c.SessionToken)))
	if _, err := memberIAM.CreateUser(ctx, &iam.CreateUserInput{UserName: aws.String("bob")}); err != nil {
		t.Fatal(err)
	}
	var names []string
	if err := p.ListUsers(ctx, otherAccount, func(u cloud.User) error { names = append(names, u.Name); return nil }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(names, []string{"bob"}) {
		t.Fatalf("users of the member account: %v (the main account's leaked in, or bob is missing)", names)
	}
	k, err := p.CreateAccessKey(ctx, otherAccount, "bob")
	if err != nil {
		t.Fatal(err)
	}
	if arn, err := p.Verify(ctx, otherAccount, k.ID, k.Secret); err != nil || arn != "arn:aws:iam::111111111111:user/bob" {
		t.Fatalf("Verify in the member account = %q, %v", arn, err)
	}
}

// TestUnsignedRequestsRefused makes sure the emulator really checks signatures in these tests.
func TestUnsignedRequestsRefused(t *testing.T) {
	cfg := bootstrap(t)
	bogus := awsConfig(*cfg.BaseEndpoint, "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "")
	p := awsiam.New(bogus, awsiam.Options{})
	err := p.ListUsers(context.Background(), mainAccount, func(cloud.User) error { return nil })
	if err == nil {
		t.Fatal("moto accepted a request signed with a key it does not know: the tests would prove nothing")
	}
}

// TestOrganizationDiscovery finds the organization's active accounts.
func TestOrganizationDiscovery(t *testing.T) {
	ctx := context.Background()
	cfg := bootstrap(t)
	org := organizations.NewFromConfig(cfg)
	if _, err := org.CreateOrganization(ctx, &organizations.CreateOrganizationInput{FeatureSet: orgtypes.OrganizationFeatureSetAll}); err != nil {
		t.Fatal(err)
	}
	created, err := org.CreateAccount(ctx, &organizations.CreateAccountInput{AccountName: aws.String("payments"), Email: aws.String("payments@example.com")})
	if err != nil {
		t.Fatal(err)
	}
	newID := aws.ToString(created.CreateAccountStatus.AccountId)
	p := awsiam.New(cfg, awsiam.Options{OrganizationRoleName: roleName})
	accounts, err := p.Accounts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]string{}
	for _, a := range accounts {
		ids[a.ID] = a.Name
	}
	if _, ok := ids[mainAccount]; !ok || ids[newID] != "payments" || len(ids) != 2 {
		t.Fatalf("discovered %v, want the management account and %s (payments)", ids, newID)
	}
}

// throttlingProxy stands in front of moto and answers the first n requests as IAM does when it
// throttles; the rest go through to moto untouched (their signatures still check out there).
func throttlingProxy(t *testing.T, moto string, n int64) string {
	t.Helper()
	target, err := url.Parse(moto)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	var seen atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if seen.Add(1) <= n {
			w.Header().Set("Content-Type", "text/xml")
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error><RequestId>keyward-test</RequestId></ErrorResponse>`))
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestThrottlingCountedAndAbsorbed: throttled requests are retried by the SDK, counted, logged, and
// the call succeeds; throttling that outlasts the retries is ErrThrottled, not a crash.
func TestThrottlingCountedAndAbsorbed(t *testing.T) {
	ctx := context.Background()
	cfg := bootstrap(t)
	if _, err := iam.NewFromConfig(cfg).CreateUser(ctx, &iam.CreateUserInput{UserName: aws.String("alice")}); err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	throttled := cfg.Copy()
	throttled.BaseEndpoint = aws.String(throttlingProxy(t, *cfg.BaseEndpoint, 2))
	p := awsiam.New(throttled, awsiam.Options{MaxRPS: 100, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if _, err := p.ListAccessKeys(ctx, mainAccount, "alice"); err != nil {
		t.Fatalf("two throttled attempts should be absorbed by the retries: %v", err)
	}
	if p.Throttles() != 2 || strings.Count(logs.String(), "AWS throttled a request") != 2 {
		t.Fatalf("throttles counted %d, logged:\n%s", p.Throttles(), logs.String())
	}

	always := cfg.Copy()
	always.BaseEndpoint = aws.String(throttlingProxy(t, *cfg.BaseEndpoint, 1000))
	p = awsiam.New(always, awsiam.Options{MaxRPS: 100})
	if _, err := p.ListAccessKeys(ctx, mainAccount, "alice"); !errors.Is(err, cloud.ErrThrottled) {
		t.Fatalf("throttling beyond the retries: %v, want ErrThrottled", err)
	}
}

// TestRateLimitPerAccount: at max_rps 5 (burst 1), 11 calls to one account cannot take less than
// 2 s. (A lower bound: a slow machine only makes it longer, so this cannot flake.)
func TestRateLimitPerAccount(t *testing.T) {
	ctx := context.Background()
	p := awsiam.New(bootstrap(t), awsiam.Options{MaxRPS: 5})
	start := time.Now()
	for range 11 {
		if _, err := p.ListAccessKeys(ctx, mainAccount, "keyward-admin"); err != nil {
			t.Fatal(err)
		}
	}
	if elapsed := time.Since(start); elapsed < 1900*time.Millisecond {
		t.Fatalf("11 calls at 5 per second took %v: the limiter let them through", elapsed)
	}
}

// TestUserPathAgainstMoto (issue 25 §2): with UserPath /ci/ the provider lists only the users under
// it — ListUsers sends PathPrefix, as moto, which filters on it, shows; and a user whose tags
// Keyward's credentials may not list is passed on with Denied naming the action, not as an error
// that would fail the account's listing (moto evaluates the policy's actions).
func TestUserPathAgainstMoto(t *testing.T) {
	ctx := context.Background()
	cfg := testenv.MotoWithAdmin(t, 0, nil)
	admin := iam.NewFromConfig(cfg)
	for _, u := range []struct{ name, path string }{{"deploy", "/ci/"}, {"build", "/ci/"}, {"payroll", "/apps/"}} {
		if _, err := admin.CreateUser(ctx, &iam.CreateUserInput{UserName: aws.String(u.name), Path: aws.String(u.path)}); err != nil {
			t.Fatal(err)
		}
	}
	listed := func(p *awsiam.Provider) map[string]string {
		t.Helper()
		out := map[string]string{}
		if err := p.ListUsers(ctx, "123456789012", func(u cloud.User) error { out[u.Name] = u.Denied; return nil }); err != nil {
			t.Fatalf("the listing failed: %v", err)
		}
		return out
	}
	got := listed(awsiam.New(cfg, awsiam.Options{UserPath: "/ci/", MaxRPS: 100}))
	if len(got) != 2 || got["deploy"] != "" || got["build"] != "" {
		t.Fatalf("with user_path /ci/: %v", got)
	}
	got = listed(awsiam.New(cfg, awsiam.Options{Accounts: []awsiam.AccountConfig{{ID: "123456789012", UserPath: "/apps/"}}, UserPath: "/ci/", MaxRPS: 100}))
	if len(got) != 1 || got["payroll"] != "" {
		t.Fatalf("with the account's own user_path /apps/: %v", got)
	}

	// A key that may list users but not their tags.
	if _, err := admin.CreateUser(ctx, &iam.CreateUserInput{UserName: aws.String("lister")}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.PutUserPolicy(ctx, &iam.PutUserPolicyInput{UserName: aws.String("lister"), PolicyName: aws.String("list"),
		PolicyDocument: aws.String(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iam:ListUsers","Resource":"*"}]}`)}); err != nil {
		t.Fatal(err)
	}
	k, err := admin.CreateAccessKey(ctx, &iam.CreateAccessKeyInput{UserName: aws.String("lister")})
	if err != nil {
		t.Fatal(err)
	}
	limited := awsConfig(*cfg.BaseEndpoint, aws.ToString(k.AccessKey.AccessKeyId), aws.ToString(k.AccessKey.SecretAccessKey), "")
	got = listed(awsiam.New(limited, awsiam.Options{MaxRPS: 100}))
	if len(got) != 5 || got["payroll"] != "iam:ListUserTags" || got["deploy"] != "iam:ListUserTags" {
		t.Fatalf("listing without iam:ListUserTags: %v", got)
	}
	_, err = awsiam.New(limited, awsiam.Options{MaxRPS: 100}).ListAccessKeys(ctx, "123456789012", "deploy")
	if action, ok := cloud.DeniedAction(err); !ok || action != "iam:ListAccessKeys" || !errors.Is(err, cloud.ErrAccessDenied) {
		t.Fatalf("a refused ListAccessKeys: %v (%q, %v)", err, action, ok)
	}
}
