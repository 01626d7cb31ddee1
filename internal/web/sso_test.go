package web_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/zitadel/oidc/v3/example/server/exampleop"
	"github.com/zitadel/oidc/v3/example/server/storage"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"

	"github.com/keyward/keyward/internal/auth"
	"github.com/keyward/keyward/internal/httpapi"
	"github.com/keyward/keyward/internal/testenv"
	"github.com/keyward/keyward/internal/vault"
)

// groupStorage is zitadel's example storage (an OpenID-certified provider library; its example
// users: test-user@HOST, password verysecure) with two things added for the test: the user's groups
// in a "groups" claim of the ID token, and a second factor in its "amr" claim.
type groupStorage struct {
	*storage.Storage
	groups []string
	mfa    bool // the sign-ins are made with a second factor
}

// claimsClient asks the provider to put the user's claims in the ID token itself.
type claimsClient struct{ op.Client }

func (claimsClient) IDTokenUserinfoClaimsAssertion() bool { return true }

func (s *groupStorage) GetClientByClientID(ctx context.Context, id string) (op.Client, error) {
	c, err := s.Storage.GetClientByClientID(ctx, id)
	if err != nil {
		return nil, err
	}
	return claimsClient{c}, nil
}

// mfaRequest is a sign-in the provider says was made with a second factor (amr "mfa").
type mfaRequest struct{ op.AuthRequest }

func (mfaRequest) GetAMR() []string { return []string{"pwd", "mfa"} }

func (s *groupStorage) AuthRequestByCode(ctx context.Context, code string) (op.AuthRequest, error) {
	r, err := s.Storage.AuthRequestByCode(ctx, code)
	if err != nil {
		return nil, err
	}
	if !s.mfa {
		return r, nil
	}
	return mfaRequest{r}, nil
}

func (s *groupStorage) SetUserinfoFromScopes(ctx context.Context, ui *oidc.UserInfo, userID, clientID string, scopes []string) error {
	if err := s.Storage.SetUserinfoFromScopes(ctx, ui, userID, clientID, scopes); err != nil {
		return err
	}
	ui.AppendClaims("groups", s.groups)
	return nil
}

func (s *groupStorage) SetUserinfoFromRequest(ctx context.Context, ui *oidc.UserInfo, req op.IDTokenRequest, scopes []string) error {
	if err := s.Storage.SetUserinfoFromRequest(ctx, ui, req, scopes); err != nil {
		return err
	}
	ui.AppendClaims("groups", s.groups)
	return nil
}

// TestSignInWithSSO signs in through a real OpenID provider (zitadel's op package and its example
// login page): "Sign in with SSO", the provider's own form, back to Keyward, the group mapped to a
// team — and the team's key revealed.
func TestSignInWithSSO(t *testing.T) {
	s := newSite(t)
	ctx := context.Background()
	idp := httptest.NewUnstartedServer(nil)
	issuer := "http://" + idp.Listener.Addr().String()
	keyward := httptest.NewUnstartedServer(nil)
	keywardURL := "http://" + keyward.Listener.Addr().String()
	users := storage.NewUserStore(issuer)
	st := &groupStorage{Storage: storage.NewStorageWithClients(users, map[string]*storage.Client{
		"keyward": storage.WebClient("keyward", "the client secret", keywardURL+"/ui/sso/callback", keywardURL+"/v1/auth/oidc/callback"),
	}), groups: []string{"payments-devs"}}
	idp.Config.Handler = exampleop.SetupServer(issuer, st, nil, false)
	idp.Start()
	t.Cleanup(idp.Close)

	sso, err := httpapi.NewOIDC(ctx, issuer, "keyward", "the client secret", keywardURL+"/v1/auth/oidc/callback", "groups",
		[]httpapi.OIDCRule{{Group: "payments-devs", Role: auth.RoleMember, Teams: []string{"payments"}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ui := s.ui
	ui.SSO = sso
	keyward.Config.Handler = httpapi.Handler(httpapi.Options{API: s.api, UI: ui.Handler()})
	keyward.Start()
	t.Cleanup(keyward.Close)

	username := "test-user@" + strings.Split(strings.TrimPrefix(issuer, "http://"), ":")[0]
	signIn := func() context.Context {
		b := testenv.Browser(t)
		if err := chromedp.Do(b, chromedp.Navigate(keywardURL+"/ui/login"), chromedp.Click(chromedp.CSS("a.sso")),
			chromedp.WaitVisible(chromedp.CSS("#username")), // the provider's own login page
			chromedp.SendKeys(chromedp.CSS("#username"), username), chromedp.SendKeys(chromedp.CSS("#password"), "verysecure"),
			chromedp.Submit(chromedp.CSS("#password")), chromedp.WaitVisible(chromedp.CSS(".signout, .error"))); err != nil {
			t.Fatal(err)
		}
		loc, _ := chromedp.Run(b, chromedp.Location())
		if h := text(t, b, "main h1"); h != "My keys" || !strings.HasPrefix(loc, keywardURL) {
			body, _ := chromedp.Run(b, chromedp.Text(chromedp.CSS("body")))
			t.Fatalf("after signing in with SSO: %q at %s\n%s", h, loc, body)
		}
		if body := text(t, b, "main"); !strings.Contains(body, "payments") {
			t.Fatalf("the group was not mapped to the team: %s", body)
		}
		return b
	}

	// Without a second factor at the provider, a member (whose role needs one) sees its team's key
	// but no Reveal, and is not sent to enrol an authenticator Keyward would never ask for.
	b := signIn()
	if body := text(t, b, "main"); !strings.Contains(body, "a second factor at your identity provider") {
		t.Fatalf("a member signed in without a second factor: %s", body)
	}
	if n, _ := chromedp.Run(b, chromedp.Evaluate[int](`document.querySelectorAll('form[action$="/reveal"]').length`)); n != 0 {
		t.Fatal("a Reveal button without a second factor")
	}

	// With one, the key is revealed.
	st.mfa = true
	b = signIn()
	shot(t, b, "sso")
	if err := chromedp.Do(b, chromedp.Click(chromedp.CSS(`form[action="/ui/teams/payments/reveal"] button`)), chromedp.WaitVisible(chromedp.CSS("#secret"))); err != nil {
		t.Fatal(err)
	}
	got, _ := chromedp.Run(b, chromedp.Value(chromedp.CSS("#secret")))
	cur, err := s.vault.Current(ctx, vault.Identity{Cloud: vault.CloudAWS, AccountID: account, UserName: "payments-app"})
	if err != nil || got != cur.SecretAccessKey.Reveal() {
		t.Fatalf("the revealed secret is not the vault's (%v)", err)
	}

	// A callback that Keyward did not start (a state it never gave) signs nobody in.
	resp, err := http.Get(keywardURL + "/ui/sso/callback?state=forged&code=whatever")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(body), "did not succeed") {
		t.Fatalf("a forged callback: %d\n%s", resp.StatusCode, body)
	}
	for _, c := range resp.Cookies() {
		if strings.Contains(c.Name, "session") {
			t.Fatalf("a forged callback set a session cookie %q", c.Name)
		}
	}
}
