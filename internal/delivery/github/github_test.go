package github_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/delivery"
	"github.com/keyward/keyward/internal/delivery/github"
	"github.com/keyward/keyward/internal/secret"
	"github.com/keyward/keyward/internal/testenv"
)

func tokenFile(t *testing.T, token string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(p, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func spec(gh *testenv.GitHub, g delivery.GitHubTarget) delivery.Spec {
	g.BaseURL = gh.URL
	g.Names = g.Names.WithDefaults()
	return delivery.Spec{Kind: delivery.GitHubActions, Name: g.Repository + g.Organization, GitHub: &g}
}

var (
	newKey = delivery.Payload{KeyID: "AKIANEW0000000000000", Secret: secret.New("new/secret+value")}
	oldKey = delivery.Payload{KeyID: "AKIAOLD0000000000000", Secret: secret.New("old/secret+value")}
)

// TestRepositoryEnvironmentAndOrganisation: the key reaches a repository's, an environment's and
// an organisation's secrets (sealed with each scope's own public key, opened by the test server),
// the id written after the secret; one JSON secret on request; Current says the value cannot be
// read back and when the secrets were written; Withdraw puts the old key back; a new public key is
// picked up.
func TestRepositoryEnvironmentAndOrganisation(t *testing.T) {
	gh := testenv.NewGitHub(t)
	gh.AddRepo("acme/deploy", "production")
	apiID := gh.AddRepo("acme/api")
	webID := gh.AddRepo("acme/web")
	gh.AddOrg("acme")
	gh.AddToken("good", testenv.GitHubToken{Sees: []string{"*"}, Write: true})
	auth := delivery.GitHubAuth{TokenFile: tokenFile(t, "good")}
	d := github.New(slog.New(slog.DiscardHandler))
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		g    delivery.GitHubTarget
		root string
	}{
		{"repository", delivery.GitHubTarget{Repository: "acme/deploy"}, "repos/acme/deploy"},
		{"environment", delivery.GitHubTarget{Repository: "acme/deploy", Environment: "production"}, "repos/acme/deploy/environments/production"},
		{"organisation", delivery.GitHubTarget{Organization: "acme", Visibility: "selected", SelectedRepositories: []string{"acme/api", "acme/web"}}, "orgs/acme"},
		{"json", delivery.GitHubTarget{Repository: "acme/api", Names: delivery.SecretNames{JSON: "AWS_CREDENTIALS"}}, "repos/acme/api"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.g.Auth = auth
			s := spec(gh, tc.g)
			if held, err := d.Current(ctx, s); err != nil || !held.Missing || held.Unreadable == "" {
				t.Fatalf("Current before: %+v %v", held, err)
			}
			puts := gh.Count("PUT")
			if err := d.Stage(ctx, s, newKey); err != nil {
				t.Fatal(err)
			}
			if gh.Count("PUT") != puts {
				t.Fatal("Stage wrote a secret")
			}
			if err := d.Publish(ctx, s, newKey); err != nil {
				t.Fatal(err)
			}
			if tc.name == "json" {
				got, _ := gh.Secret(tc.root, "AWS_CREDENTIALS")
				var v struct{ AccessKeyId, SecretAccessKey string }
				if err := json.Unmarshal([]byte(got.Value), &v); err != nil || v.AccessKeyId != newKey.KeyID || v.SecretAccessKey != newKey.Secret.Reveal() {
					t.Fatalf("the JSON secret: %v", err)
				}
				return
			}
			id, _ := gh.Secret(tc.root, "AWS_ACCESS_KEY_ID")
			sec, _ := gh.Secret(tc.root, "AWS_SECRET_ACCESS_KEY")
			if id.Value != newKey.KeyID || sec.Value != newKey.Secret.Reveal() {
				t.Fatalf("the secrets hold %q and another secret", id.Value)
			}
			if last := gh.Requests[len(gh.Requests)-1]; !strings.HasSuffix(last, "/AWS_ACCESS_KEY_ID") {
				t.Fatalf("the id was not written last: %s", last)
			}
			if tc.name == "organisation" && (id.Visibility != "selected" || len(id.SelectedIDs) != 2 || id.SelectedIDs[0] != apiID || id.SelectedIDs[1] != webID) {
				t.Fatalf("organisation secret: %+v", id)
			}
			held, err := d.Current(ctx, s)
			if err != nil || held.Missing || held.UpdatedAt.IsZero() || !strings.Contains(held.Unreadable, "never returns") {
				t.Fatalf("Current after: %+v %v", held, err)
			}
			gh.RotateKey(tc.root)
			if err := d.Withdraw(ctx, s, newKey, &oldKey); err != nil {
				t.Fatal(err)
			}
			if id, _ := gh.Secret(tc.root, "AWS_ACCESS_KEY_ID"); id.Value != oldKey.KeyID {
				t.Fatalf("after Withdraw: %s", id.Value)
			}
		})
	}
}

// TestGitHubApp: with an App's id, installation and private key, Keyward signs a JWT, is given an
// installation token and reuses it until shortly before it expires.
func TestGitHubApp(t *testing.T) {
	gh := testenv.NewGitHub(t)
	gh.AddRepo("acme/deploy")
	pem := gh.AddApp(t, 42, 4242, testenv.GitHubToken{Sees: []string{"repos/acme/deploy"}, Write: true})
	keyFile := filepath.Join(t.TempDir(), "app.pem")
	if err := os.WriteFile(keyFile, pem, 0o600); err != nil {
		t.Fatal(err)
	}
	d := github.New(slog.New(slog.DiscardHandler))
	s := spec(gh, delivery.GitHubTarget{Repository: "acme/deploy", Auth: delivery.GitHubAuth{AppID: 42, InstallationID: 4242, PrivateKeyFile: keyFile}})
	for range 3 {
		if err := delivery.Put(context.Background(), d, s, newKey); err != nil {
			t.Fatal(err)
		}
	}
	if n := gh.Count("POST /app/installations/4242/access_tokens"); n != 1 {
		t.Fatalf("%d installation tokens made for 3 deliveries", n)
	}
	wrong := spec(gh, delivery.GitHubTarget{Repository: "acme/deploy", Auth: delivery.GitHubAuth{AppID: 43, InstallationID: 4242, PrivateKeyFile: keyFile}})
	if err := d.Stage(context.Background(), wrong, newKey); err == nil || !strings.Contains(err.Error(), "app_id, installation_id and private_key_file") {
		t.Fatalf("a wrong App id: %v", err)
	}
}

// TestRefusals: each of GitHub's refusals is an error that names the target, the status and what
// to do — the permission missing, the repository not found — and never the token or the key; rate
// limits say when to come back.
func TestRefusals(t *testing.T) {
	gh := testenv.NewGitHub(t)
	gh.AddRepo("acme/deploy")
	gh.AddToken("ghp_good0123", testenv.GitHubToken{Sees: []string{"*"}, Write: true})
	gh.AddToken("ghp_readonly0123", testenv.GitHubToken{Sees: []string{"*"}})
	d := github.New(slog.New(slog.DiscardHandler))
	d.Now = func() time.Time { return time.Unix(1_900_000_000, 0) }
	ctx := context.Background()
	with := func(token, repo string) delivery.Spec {
		return spec(gh, delivery.GitHubTarget{Repository: repo, Auth: delivery.GitHubAuth{Token: secret.New(token)}})
	}
	for _, tc := range []struct {
		name   string
		spec   delivery.Spec
		before func()
		status int
		want   string
		wait   time.Duration
	}{
		{"wrong token", with("ghp_wrong0123", "acme/deploy"), nil, 401, "the token was refused", 0},
		{"no permission", with("ghp_readonly0123", "acme/deploy"), nil, 403, `"Secrets: read and write" on acme/deploy`, 0},
		{"renamed repository", with("ghp_good0123", "acme/old-name"), nil, 404, "the repository acme/old-name does not exist, was renamed", 0},
		{"primary rate limit", with("ghp_good0123", "acme/deploy"), func() {
			gh.FailNext(1, 403, "API rate limit exceeded", map[string]string{"X-Ratelimit-Remaining": "0", "X-Ratelimit-Reset": "1900000090"})
		}, 403, "rate limited; trying again in 1m30s", 90 * time.Second},
		{"secondary rate limit", with("ghp_good0123", "acme/deploy"), func() {
			gh.FailNext(1, 429, "You have exceeded a secondary rate limit", map[string]string{"Retry-After": "7"})
		}, 429, "trying again in 7s", 7 * time.Second},
		{"bad gateway", with("ghp_good0123", "acme/deploy"), func() { gh.FailNext(1, 502, "Server Error", nil) }, 502, "GitHub is failing", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.before != nil {
				tc.before()
			}
			err := d.Publish(ctx, tc.spec, newKey)
			var he *delivery.RefusedError
			if !errors.As(err, &he) || he.Status != tc.status || !strings.Contains(err.Error(), tc.want) || he.RetryAfter() != tc.wait {
				t.Fatalf("got %v (%+v)", err, he)
			}
			for _, leak := range []string{"ghp_", newKey.Secret.Reveal()} {
				if strings.Contains(err.Error(), leak) {
					t.Fatalf("the error quotes %q: %v", leak, err)
				}
			}
		})
	}
	if _, written := gh.Secret("repos/acme/deploy", "AWS_ACCESS_KEY_ID"); written {
		t.Fatal("a refused delivery wrote a secret")
	}
}
