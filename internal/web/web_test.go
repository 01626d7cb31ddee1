package web_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"image/png"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/pquerna/otp/totp"

	"github.com/keyward/keyward/internal/access"
	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/auth"
	"github.com/keyward/keyward/internal/cloud"
	"github.com/keyward/keyward/internal/cloud/sim"
	"github.com/keyward/keyward/internal/delivery"
	"github.com/keyward/keyward/internal/httpapi"
	"github.com/keyward/keyward/internal/inventory"
	"github.com/keyward/keyward/internal/report"
	"github.com/keyward/keyward/internal/rotation"
	"github.com/keyward/keyward/internal/secret"
	"github.com/keyward/keyward/internal/store"
	"github.com/keyward/keyward/internal/store/storetest"
	"github.com/keyward/keyward/internal/testenv"
	"github.com/keyward/keyward/internal/vault"
	"github.com/keyward/keyward/internal/web"
)

const account = "123456789012"

var password = secret.New("correct horse battery staple")

// site is Keyward's API and pages over a simulated cloud, with people: mia (member of payments,
// TOTP), otto (auditor of payments), sam (member of search).
type site struct {
	t       testing.TB
	db      *store.DB
	vault   *vault.Vault
	svc     *auth.Service
	trail   *audit.Trail
	cloud   *sim.Cloud
	srv     *httptest.Server
	seeds   map[string]string
	logs    *testenv.SyncBuffer
	reports *report.Service
	engine  *rotation.Engine
	ui      *web.UI
	api     *httpapi.API
}

func newSite(t *testing.T) *site { return newSiteB(t) }

func newSiteB(t testing.TB) *site {
	t.Helper()
	return newSiteOn(t, testenv.Database{Driver: "sqlite", DSN: filepath.Join(t.TempDir(), "k.db")})
}

// newSiteOn is the site over a database of the test's choice.
func newSiteOn(t testing.TB, d testenv.Database) *site {
	t.Helper()
	ctx := context.Background()
	s := &site{t: t, seeds: map[string]string{}, logs: &testenv.SyncBuffer{}}
	s.db = storetest.Open(t, d)
	s.vault = storetest.Vault(t, s.db, nil)
	log := slog.New(slog.NewJSONHandler(s.logs, nil))
	s.trail = audit.New(s.db.Audit(), nil, log)
	cfg := auth.Config{Issuer: "keyward-test", Audience: "keyward", TokenTTL: 2 * time.Minute, KeyRotation: 24 * time.Hour,
		RequireMFA: []auth.Role{auth.RoleAdmin, auth.RoleMember}, Argon2: auth.Argon2Params{MemoryKiB: 64, Iterations: 1, Parallelism: 1},
		Lockout: auth.Lockout{MaxFailures: 5, IPMaxFailures: 50, Duration: time.Minute, Delay: time.Millisecond, MaxDelay: 2 * time.Millisecond}}
	var err error
	if s.svc, err = auth.New(cfg, s.db.Auth(), s.vault, s.trail, nil); err != nil {
		t.Fatal(err)
	}
	s.cloud = sim.New()
	for _, u := range []string{"payments-app", "search-app"} {
		s.cloud.AddUser(account, u, "/", nil)
	}
	engine := rotation.New(rotation.Engine{Cloud: s.cloud, Vault: s.vault, Store: s.db.Rotations(), Owner: "test", Log: log, Audit: s.trail,
		Policy: rotation.DefaultPolicy(), VerifyInterval: time.Millisecond,
		Delivery: &rotation.Delivery{To: delivery.NewMemory(), Records: s.db.Deliveries(), Router: &delivery.Router{DefaultRegion: "eu-west-1",
			Targets: []delivery.Target{{Match: delivery.Match{User: "payments-app"}, Kind: delivery.SecretsManager, Name: "keyward/{user}"}}}}})
	for _, team := range []string{"payments", "search"} {
		if _, err := s.svc.AddTeam(ctx, "cli:test", auth.Team{Name: team, Identity: vault.Identity{Cloud: vault.CloudAWS, AccountID: account, UserName: team + "-app"}}); err != nil {
			t.Fatal(err)
		}
	}
	for _, u := range []struct {
		name  string
		role  auth.Role
		teams []string
		mfa   bool
	}{{"mia", auth.RoleMember, []string{"payments"}, true}, {"otto", auth.RoleAuditor, []string{"payments"}, false}, {"sam", auth.RoleMember, []string{"search"}, true},
		{"ada", auth.RoleAdmin, nil, true}} {
		if _, err := s.svc.AddUser(ctx, "cli:test", u.name, u.role, u.teams, password); err != nil {
			t.Fatal(err)
		}
		if u.mfa {
			uri, err := s.svc.EnrollMFA(ctx, "cli:test", u.name)
			if err != nil {
				t.Fatal(err)
			}
			parsed, _ := url.Parse(uri.Reveal())
			s.seeds[u.name] = parsed.Query().Get("secret")
		}
	}
	acc := &access.Service{Auth: s.svc, Vault: s.vault, Engine: engine, Audit: s.trail}
	s.reports = &report.Service{Inventory: s.db.Inventory(), Snapshots: s.db.Inventory(), Trail: s.trail, Rotations: s.db.Rotations(),
		Vault: s.vault, Policy: engine.Policy}
	s.engine = engine
	ui := &web.UI{Auth: s.svc, Access: acc, Sessions: s.db.UISessions(), Log: log, Trail: s.trail, Vault: s.vault, Reports: s.reports}
	api := &httpapi.API{Auth: s.svc, Vault: s.vault, Trail: s.trail, Access: acc, Version: "test"}
	s.ui, s.api = ui, api
	s.srv = httptest.NewServer(httpapi.Handler(httpapi.Options{Log: log, API: api, UI: ui.Handler()}))
	t.Cleanup(s.srv.Close)
	return s
}

var (
	codeMu   sync.Mutex
	lastStep = map[string]int64{}
)

// code is a TOTP code for a user that has not been used yet (a code signs in once): it waits for
// the next time step when the current one was used.
func (s *site) code(user string) string {
	codeMu.Lock()
	defer codeMu.Unlock()
	now := time.Now()
	seed := s.seeds[user]
	if step := now.Unix() / 30; lastStep[seed] == step {
		time.Sleep(time.Until(time.Unix((step+1)*30, 0)))
		now = time.Now()
	}
	lastStep[seed] = now.Unix() / 30
	c, err := totp.GenerateCode(s.seeds[user], now)
	if err != nil {
		s.t.Fatal(err)
	}
	return c
}

// signIn signs a user in through the login page.
func (s *site) signIn(ctx context.Context, user, code string) error {
	return chromedp.Do(ctx,
		chromedp.Navigate(s.srv.URL+"/ui/login"),
		chromedp.WaitVisible(chromedp.CSS("#username")),
		chromedp.SendKeys(chromedp.CSS("#username"), user),
		chromedp.SendKeys(chromedp.CSS("#password"), password.Reveal()),
		chromedp.SendKeys(chromedp.CSS("#code"), code),
		chromedp.Submit(chromedp.CSS("#password")),
		// The answer: signed in (the sign-out button), or the form again with its error.
		chromedp.WaitVisible(chromedp.CSS(".signout, .error")),
	)
}

func text(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	got, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		t.Fatalf("text of %s: %v", sel, err)
	}
	return got
}

func value(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	got, err := chromedp.Run(ctx, chromedp.Value(chromedp.CSS(sel)))
	if err != nil {
		t.Fatalf("value of %s: %v", sel, err)
	}
	return got
}

// shot writes a screenshot of the page for a reviewer (KEYWARD_SCREENSHOTS, or a folder under the
// system's temporary directory); not committed.
func shot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	dir := os.Getenv("KEYWARD_SCREENSHOTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "keyward-screenshots")
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(90))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	_ = os.MkdirAll(dir, 0o755)
	_ = os.WriteFile(filepath.Join(dir, name+".jpg"), png, 0o644)
}

// TestSignInRevealSignOut: a wrong code is refused; the right one signs in; the member reveals their
// team's key (recorded, never cached) and cannot reveal another team's (403 page); signing out ends
// the session, and the back button shows nothing secret.
func TestSignInRevealSignOut(t *testing.T) {
	s := newSite(t)
	ctx := testenv.Browser(t)
	if err := s.signIn(ctx, "mia", "000000"); err != nil {
		t.Fatal(err)
	}
	if got := text(t, ctx, ".error"); !strings.Contains(got, "Wrong user name, password or code") {
		t.Fatalf("a wrong code: %q", got)
	}
	if err := s.signIn(ctx, "mia", s.code("mia")); err != nil {
		t.Fatal(err)
	}
	if h := text(t, ctx, "main h1"); h != "My keys" {
		body, _ := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("main")))
		t.Fatalf("after signing in: %q\n%s\n%s", h, body, s.logs.String())
	}
	shot(t, ctx, "my-keys")
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`form[action="/ui/teams/payments/reveal"] button`)), chromedp.WaitVisible(chromedp.CSS("#secret"))); err != nil {
		t.Fatal(err)
	}
	shot(t, ctx, "reveal")
	// The credential_process line needs an API key: the page says whom to ask and what they run.
	if help, cmd := text(t, ctx, "#apikey-help"), value(t, ctx, "#apikey-cmd"); !strings.Contains(help, "ask ada") ||
		cmd != "keyward apikey create --name payments-mia --role member --team payments --expires 90d > payments.key" {
		t.Errorf("whom to ask for an API key: %q, %q", help, cmd)
	}
	got, _ := chromedp.Run(ctx, chromedp.Value(chromedp.CSS("#secret")))
	cur, err := s.vault.Current(context.Background(), vault.Identity{Cloud: vault.CloudAWS, AccountID: account, UserName: "payments-app"})
	if err != nil || got != cur.SecretAccessKey.Reveal() {
		t.Fatalf("the revealed secret is not the vault's (%v)", err)
	}
	recs, _, _ := s.trail.Find(context.Background(), audit.Filter{Action: "key.read", Limit: 10})
	if len(recs) != 1 || recs[0].Actor != "user:mia" || recs[0].Detail["via"] != "web" {
		t.Fatalf("read records: %+v", recs)
	}
	loc, _ := chromedp.Run(ctx, chromedp.Location())
	if strings.Contains(loc, cur.SecretAccessKey.Reveal()) || strings.Contains(loc, "secret") {
		t.Fatalf("the secret is in the URL: %s", loc)
	}

	// Another team's key, by a hand-made POST with a good anti-forgery token: refused.
	if err := chromedp.Do(ctx, chromedp.Navigate(s.srv.URL+"/ui/"), chromedp.WaitVisible(chromedp.CSS("main h1"))); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`(() => {
		const f = document.createElement('form');
		f.method = 'post'; f.action = '/ui/teams/search/reveal';
		const c = document.createElement('input');
		c.type = 'hidden'; c.name = 'csrf'; c.value = document.querySelector('input[name=csrf]').value;
		f.appendChild(c); document.body.appendChild(f); f.submit(); return true;
	})()`)); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS("main h1"))); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if h := text(t, ctx, "main h1"); h != "Not allowed" {
		t.Fatalf("another team's key: %q", h)
	}

	// Sign out: the session ends; going back shows the sign-in page, not the secret.
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(".signout button")), chromedp.WaitVisible(chromedp.CSS("#username"))); err != nil {
		t.Fatal(err)
	}
	// (The page before was the answer to a POST, kept by no cache: the browser may refuse to show it
	// at all, ERR_CACHE_MISS; either way nothing secret may appear.)
	_ = chromedp.Do(ctx, chromedp.NavigateBack())
	_ = chromedp.Do(ctx, chromedp.Sleep(300*time.Millisecond))
	html, _ := chromedp.Run(ctx, chromedp.OuterHTML(chromedp.CSS("html")))
	if strings.Contains(html, cur.SecretAccessKey.Reveal()) {
		t.Fatal("the back button shows the secret after signing out")
	}
	if err := chromedp.Do(ctx, chromedp.Navigate(s.srv.URL+"/ui/"), chromedp.WaitVisible(chromedp.CSS("#username"))); err != nil {
		t.Fatalf("after signing out, the keys page did not send to the sign-in page: %v", err)
	}
}

func cloudUser(name string) cloud.User { return cloud.User{AccountID: account, Name: name} }

// unlabelled lists the page's form controls that no label names (accessibility), and its size.
func unlabelled(t *testing.T, ctx context.Context) ([]string, int) {
	t.Helper()
	got, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll('input:not([type=hidden]), textarea, select'))
		.filter(e => !(e.id && document.querySelector('label[for="' + e.id + '"]')) && !e.getAttribute('aria-label') && !e.closest('label'))
		.map(e => e.outerHTML.slice(0, 80))`))
	if err != nil {
		t.Fatal(err)
	}
	html, _ := chromedp.Run(ctx, chromedp.OuterHTML(chromedp.CSS("html")))
	return got, len(html)
}

// TestSecurity: cookies and headers as the issue asks; a forged cross-site form is refused; a
// same-site POST without the token too; an auditor has no Reveal and a hand-made one is refused;
// names are text, never markup; every control is labelled, every page small.
func TestSecurity(t *testing.T) {
	s := newSite(t)

	// Cookies and headers, seen by a plain HTTP client.
	jar := newJar()
	c := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(s.srv.URL + "/ui/login")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	for name, want := range map[string]string{"Cache-Control": "no-store", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer"} {
		if got := resp.Header.Get(name); got != want {
			t.Errorf("%s: %q, want %q", name, got, want)
		}
	}
	if csp := resp.Header.Get("Content-Security-Policy"); strings.Contains(csp, "unsafe-inline") || !strings.Contains(csp, "script-src 'self'") ||
		!strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("CSP: %q", csp)
	}
	login := jar.get("keyward_login")
	resp, err = c.PostForm(s.srv.URL+"/ui/login", url.Values{"csrf": {login}, "username": {"sam"}, "password": {password.Reveal()}, "code": {s.code("sam")}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var session *http.Cookie
	for _, ck := range resp.Cookies() {
		if ck.Name == "keyward_session" {
			session = ck
		}
	}
	if resp.StatusCode != http.StatusSeeOther || session == nil || !session.HttpOnly || session.SameSite != http.SameSiteStrictMode || session.Secure {
		t.Fatalf("sign-in: %d, session cookie %+v", resp.StatusCode, session)
	}
	// The same site, the session's cookie, no anti-forgery token: refused.
	resp, err = c.PostForm(s.srv.URL+"/ui/teams/search/reveal", url.Values{})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), "anti-forgery") {
		t.Fatalf("a POST without the token: %d", resp.StatusCode)
	}

	// A forged form on another site, submitted by mia's browser: the strict cookie stays home.
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprintf(w, `<form id=f method=post action="%s/ui/teams/payments/reveal"><input name=csrf value=guess></form>`+
			`<script>window.onload = () => setTimeout(() => document.getElementById('f').submit(), 100)</script>`, s.srv.URL)
	}))
	defer evil.Close()
	ctx := testenv.Browser(t)
	if err := s.signIn(ctx, "mia", s.code("mia")); err != nil {
		t.Fatal(err)
	}
	// (The page submits its form as soon as it has loaded: the browser may report the load as
	// aborted by that navigation.)
	if err := chromedp.Do(ctx, chromedp.Navigate(evil.URL)); err != nil && !strings.Contains(err.Error(), "ERR_ABORTED") {
		t.Fatal(err)
	}
	target := s.srv.URL + "/ui/teams/payments/reveal"
	for deadline := time.Now().Add(10 * time.Second); ; {
		if loc, _ := chromedp.Run(ctx, chromedp.Location()); loc == target {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the forged form was not submitted")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS("main h1"))); err != nil {
		t.Fatal(err)
	}
	if h := text(t, ctx, "main h1"); h != "Signed out" && h != "Refused" {
		t.Fatalf("a forged cross-site POST: %q", h)
	}
	cur, _ := s.vault.Current(context.Background(), vault.Identity{Cloud: vault.CloudAWS, AccountID: account, UserName: "payments-app"})
	if html, _ := chromedp.Run(ctx, chromedp.OuterHTML(chromedp.CSS("html"))); cur.SecretAccessKey.Reveal() != "" && strings.Contains(html, cur.SecretAccessKey.Reveal()) {
		t.Fatal("the forged POST revealed the key")
	}

	// Names are text: a team and an IAM user named with markup (made in the database directly:
	// validation would refuse them) render as themselves, and no script runs.
	evilTeam := auth.Team{Name: `<img src=x onerror=alert(1)>`, Identity: vault.Identity{Cloud: vault.CloudAWS, AccountID: account, UserName: `<script>alert(2)</script>`},
		CreatedAt: time.Now()}
	if err := s.db.Auth().CreateTeam(context.Background(), evilTeam); err != nil {
		t.Fatal(err)
	}
	if err := s.db.Auth().AddMember(context.Background(), evilTeam.Name, "user:mia"); err != nil {
		t.Fatal(err)
	}
	var dialogs sync.Map
	_ = chromedp.Listen(ctx, func(ev any) {
		if d, ok := ev.(*page.EventJavascriptDialogOpening); ok {
			dialogs.Store(d.Message, true)
		}
	})
	if err := chromedp.Do(ctx, chromedp.Navigate(s.srv.URL+"/ui/"), chromedp.WaitVisible(chromedp.CSS("main h1")), chromedp.Sleep(300*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	body2 := text(t, ctx, "main")
	if !strings.Contains(body2, `<img src=x onerror=alert(1)>`) || !strings.Contains(body2, `<script>alert(2)</script>`) {
		t.Fatalf("the names are not shown as text:\n%s", body2)
	}
	dialogs.Range(func(k, _ any) bool { t.Fatalf("a script ran: alert(%v)", k); return false })
	bad, size := unlabelled(t, ctx)
	if len(bad) > 0 || size > 200<<10 {
		t.Fatalf("my keys page: unlabelled %v, %d bytes", bad, size)
	}

	// An auditor: no Reveal, and a hand-made one is refused.
	actx := testenv.Browser(t)
	if err := s.signIn(actx, "otto", ""); err != nil {
		t.Fatal(err)
	}
	if n, _ := chromedp.Run(actx, chromedp.Evaluate[int](`document.querySelectorAll('form[action$="/reveal"]').length`)); n != 0 {
		t.Fatalf("the auditor sees %d Reveal buttons", n)
	}
	shot(t, actx, "auditor")
	if _, err := chromedp.Run(actx, chromedp.Evaluate[bool](`(() => {
		const f = document.createElement('form'); f.method = 'post'; f.action = '/ui/teams/payments/reveal';
		const c = document.createElement('input'); c.type = 'hidden'; c.name = 'csrf'; c.value = document.querySelector('input[name=csrf]').value;
		f.appendChild(c); document.body.appendChild(f); f.submit(); return true; })()`)); err != nil {
		t.Fatal(err)
	}
	_ = chromedp.Do(actx, chromedp.Sleep(300*time.Millisecond), chromedp.WaitVisible(chromedp.CSS("main h1")))
	if h := text(t, actx, "main h1"); h != "Not allowed" {
		t.Fatalf("the auditor's hand-made reveal: %q", h)
	}
	// The sign-in page: labelled, small, usable with the keyboard alone.
	kctx := testenv.Browser(t)
	if err := chromedp.Do(kctx, chromedp.Navigate(s.srv.URL+"/ui/login"), chromedp.WaitVisible(chromedp.CSS("#username"))); err != nil {
		t.Fatal(err)
	}
	if bad, size := unlabelled(t, kctx); len(bad) > 0 || size > 200<<10 {
		t.Fatalf("sign-in page: unlabelled %v, %d bytes", bad, size)
	}
	shot(t, kctx, "sign-in")
	if err := chromedp.Do(kctx, chromedp.SendKeys(chromedp.CSS("#username"), "otto\t"+password.Reveal()+"\t\r"),
		chromedp.WaitVisible(chromedp.CSS(".signout"))); err != nil {
		t.Fatalf("signing in with the keyboard alone: %v", err)
	}
}

// jar is a cookie jar that can be read by name.
type jar struct {
	mu sync.Mutex
	c  map[string]string
}

func newJar() *jar { return &jar{c: map[string]string{}} }

func (j *jar) SetCookies(_ *url.URL, cs []*http.Cookie) {
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, c := range cs {
		if c.MaxAge < 0 {
			delete(j.c, c.Name)
		} else {
			j.c[c.Name] = c.Value
		}
	}
}

func (j *jar) Cookies(*url.URL) []*http.Cookie {
	j.mu.Lock()
	defer j.mu.Unlock()
	var out []*http.Cookie
	for k, v := range j.c {
		out = append(out, &http.Cookie{Name: k, Value: v})
	}
	return out
}

func (j *jar) get(name string) string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.c[name]
}

// TestAuditorAndAdmin: the auditor reads and verifies the trail, and finds no reports page until the
// inventory was read; the admin adds a user (after confirming) and creates an API key, shown once.
func TestAuditorAndAdmin(t *testing.T) {
	s := newSite(t)
	ctx := testenv.Browser(t)
	if err := s.signIn(ctx, "otto", ""); err != nil {
		t.Fatal(err)
	}
	if n, _ := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('a[href="/ui/reports"]').length`)); n != 0 {
		t.Fatal("a reports link before there is a report")
	}
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`a[href="/ui/audit"]`)), chromedp.WaitVisible(chromedp.CSS("table"))); err != nil {
		t.Fatal(err)
	}
	if body := text(t, ctx, "tbody"); !strings.Contains(body, "auth.login") || !strings.Contains(body, "user:otto") {
		t.Fatalf("the audit page: %s", body)
	}
	// Newest first, with a link to the other order.
	seqs := func() []int {
		got, err := chromedp.Run(ctx, chromedp.Evaluate[[]int](`[...document.querySelectorAll("tbody tr td:first-child")].map(td => +td.textContent)`))
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	if got := seqs(); len(got) < 2 || !slices.IsSortedFunc(got, func(a, b int) int { return b - a }) {
		t.Fatalf("the audit page is not newest first: %v", got)
	}
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`a[href*="order=oldest"]`)), chromedp.WaitVisible(chromedp.CSS(`a[href*="order=newest"]`))); err != nil {
		t.Fatal(err)
	}
	if got := seqs(); len(got) < 2 || !slices.IsSorted(got) || got[0] != 1 {
		t.Fatalf("oldest first: %v", got)
	}
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`a[href="/ui/audit/verify"]`)), chromedp.WaitVisible(chromedp.CSS("p.ok, p.error"))); err != nil {
		t.Fatal(err)
	}
	if got := text(t, ctx, "p.ok"); !strings.HasPrefix(got, "Chain intact:") {
		t.Fatalf("verification: %q", got)
	}
	shot(t, ctx, "audit")
	if bad, size := unlabelled(t, ctx); len(bad) > 0 || size > 200<<10 {
		t.Fatalf("audit page: unlabelled %v, %d bytes", bad, size)
	}
	// The inventory is read: the reports page appears.
	r := &inventory.Reader{Cloud: s.cloud, Reports: s.cloud, Policy: s.engine.Policy, Vault: s.vault}
	accounts, err := r.Read(context.Background(), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range accounts {
		_ = s.db.Inventory().SaveAccount(context.Background(), a)
	}
	if _, err := s.reports.Snapshot(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx, chromedp.Navigate(s.srv.URL+"/ui/"), chromedp.Click(chromedp.CSS(`a[href="/ui/reports"]`)), chromedp.WaitVisible(chromedp.CSS("svg.chart, table"))); err != nil {
		t.Fatal(err)
	}
	if h := text(t, ctx, "main h1"); h != "Compliance" {
		t.Fatalf("reports page: %q", h)
	}
	shot(t, ctx, "reports")
	if bad, size := unlabelled(t, ctx); len(bad) > 0 || size > 200<<10 {
		t.Fatalf("reports page: unlabelled %v, %d bytes", bad, size)
	}
	// The auditor sees the inventory, without Reveal or Rotate now.
	if _, err := s.engine.Provision(context.Background(), cloudUser("payments-app"), rotation.VisitOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx, chromedp.Navigate(s.srv.URL+"/ui/inventory"), chromedp.WaitVisible(chromedp.CSS("tbody"))); err != nil {
		t.Fatal(err)
	}
	if body := text(t, ctx, "tbody"); !strings.Contains(body, "payments-app") {
		t.Fatalf("the auditor's inventory: %s", body)
	}
	if n, _ := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('form[action$="/reveal"], form[action$="/rotate"]').length`)); n != 0 {
		t.Fatalf("the auditor sees %d Reveal or Rotate buttons on the inventory", n)
	}

	// The admin (with her code) adds a user — after confirming — and creates an API key.
	actx := testenv.Browser(t)
	if err := s.signIn(actx, "ada", s.code("ada")); err != nil {
		t.Fatal(err)
	}
	// An administrator in no team is told where she adds people to teams, not to ask an administrator.
	if home := text(t, actx, "main"); !strings.Contains(home, "Administration") || strings.Contains(home, "an administrator adds you") {
		t.Errorf("the admin's home page: %s", home)
	}
	if err := chromedp.Do(actx, chromedp.Navigate(s.srv.URL+"/ui/admin"), chromedp.WaitVisible(chromedp.CSS("#u-name")),
		chromedp.SendKeys(chromedp.CSS("#u-name"), "nina"), chromedp.SendKeys(chromedp.CSS("#u-teams"), "search"),
		chromedp.SendKeys(chromedp.CSS("#u-password"), "a long enough password"),
		chromedp.Click(chromedp.CSS(`form[action="/ui/admin/add-user"] button`)), chromedp.WaitVisible(chromedp.CSS(`#confirm`))); err != nil {
		t.Fatal(err)
	}
	shot(t, actx, "admin-confirm")
	if err := chromedp.Do(actx, chromedp.Click(chromedp.CSS("#confirm")), chromedp.WaitVisible(chromedp.CSS("p.ok"))); err != nil {
		t.Fatal(err)
	}
	if _, err := s.svc.User(context.Background(), "nina"); err != nil {
		t.Fatalf("the user was not added: %v", err)
	}
	shot(t, actx, "admin")
	if bad, size := unlabelled(t, actx); len(bad) > 0 || size > 200<<10 {
		t.Fatalf("admin page: unlabelled %v, %d bytes", bad, size)
	}
	if err := chromedp.Do(actx, chromedp.SendKeys(chromedp.CSS("#k-name"), "ci"), chromedp.SendKeys(chromedp.CSS("#k-teams"), "payments"),
		chromedp.Click(chromedp.CSS(`form[action="/ui/admin/create-key"] button`)), chromedp.WaitVisible(chromedp.CSS("#confirm")),
		chromedp.Click(chromedp.CSS("#confirm")), chromedp.WaitVisible(chromedp.CSS("#created"))); err != nil {
		t.Fatal(err)
	}
	key, _ := chromedp.Run(actx, chromedp.Value(chromedp.CSS("#created")))
	if p, err := s.svc.AuthenticateAPIKey(context.Background(), key); err != nil || p.Name != "ci" {
		t.Fatalf("the API key shown does not work: %v", err)
	}
}

// A member without an authenticator is sent to enrol one at first sign-in: a QR code and the seed,
// shown once; the session ends, and the next sign-in with the app's code reaches the keys.
func TestEnrolmentAtFirstSignIn(t *testing.T) {
	s := newSite(t)
	if _, err := s.svc.AddUser(context.Background(), "cli:test", "nora", auth.RoleMember, []string{"payments"}, password); err != nil {
		t.Fatal(err)
	}
	ctx := testenv.Browser(t)
	if err := chromedp.Do(ctx, chromedp.Navigate(s.srv.URL+"/ui/login"), chromedp.WaitVisible(chromedp.CSS("#username")),
		chromedp.SendKeys(chromedp.CSS("#username"), "nora"), chromedp.SendKeys(chromedp.CSS("#password"), password.Reveal()),
		chromedp.Submit(chromedp.CSS("#password")), chromedp.WaitVisible(chromedp.CSS(`form[action="/ui/mfa"]`))); err != nil {
		t.Fatalf("first sign-in did not lead to enrolment: %v", err)
	}
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`form[action="/ui/mfa"] button`)), chromedp.WaitVisible(chromedp.CSS("svg.qr"))); err != nil {
		t.Fatal(err)
	}
	shot(t, ctx, "enrolment")
	seed, _ := chromedp.Run(ctx, chromedp.Value(chromedp.CSS("#seed")))
	if len(seed) < 16 {
		t.Fatalf("seed %q", seed)
	}
	s.seeds["nora"] = seed
	if err := chromedp.Do(ctx, chromedp.Navigate(s.srv.URL+"/ui/"), chromedp.WaitVisible(chromedp.CSS("#username"))); err != nil {
		t.Fatalf("the session outlived the enrolment: %v", err)
	}
	if err := s.signIn(ctx, "nora", s.code("nora")); err != nil {
		t.Fatal(err)
	}
	if h := text(t, ctx, "main h1"); h != "My keys" {
		t.Fatalf("after enrolling and signing in with the code: %q", h)
	}
}

// The inventory page: every identity with its state, filtered and paged on the server, a histogram;
// an operator rotates a team's key from it (after confirming) and watches the rotation finish; the
// identity's history shows it.
func TestInventoryAndRotateNow(t *testing.T) {
	s := newSite(t)
	if _, err := s.svc.AddUser(context.Background(), "cli:test", "olga", auth.RoleOperator, []string{"payments"}, password); err != nil {
		t.Fatal(err)
	}
	// payments gets its first key (a rotation); search has none yet.
	if _, err := s.engine.Provision(context.Background(), cloudUser("payments-app"), rotation.VisitOptions{}); err != nil {
		t.Fatal(err)
	}
	ctx := testenv.Browser(t)
	if err := s.signIn(ctx, "olga", ""); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`a[href="/ui/inventory"]`)), chromedp.WaitVisible(chromedp.CSS("table"))); err != nil {
		t.Fatal(err)
	}
	if body := text(t, ctx, "tbody"); !strings.Contains(body, "payments-app") || !strings.Contains(body, "ok") {
		t.Fatalf("inventory: %s", body)
	}
	shot(t, ctx, "inventory")
	if bad, size := unlabelled(t, ctx); len(bad) > 0 || size > 200<<10 {
		t.Fatalf("inventory page: unlabelled %v, %d bytes", bad, size)
	}
	if v := testenv.Axe(t, ctx); len(v) > 0 {
		t.Errorf("inventory page: axe-core finds:\n%s", strings.Join(v, "\n"))
	}
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`form[action="/ui/identities/`+account+`/payments-app/rotate"] button`)), chromedp.WaitVisible(chromedp.CSS("#confirm")),
		chromedp.Click(chromedp.CSS("#confirm")), chromedp.WaitVisible(chromedp.CSS("#outcome"))); err != nil {
		t.Fatal(err)
	}
	waitRotated(t, ctx)
	shot(t, ctx, "rotation")
	if bad, size := unlabelled(t, ctx); len(bad) > 0 || size > 200<<10 {
		t.Fatalf("rotation page: unlabelled %v, %d bytes", bad, size)
	}
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`a[href^="/ui/identities/"]`)), chromedp.WaitVisible(chromedp.CSS("h2"))); err != nil {
		t.Fatal(err)
	}
	if body := text(t, ctx, "main"); !strings.Contains(body, "rotated") || !strings.Contains(body, "key.rotated") {
		t.Fatalf("history: %s", body)
	}
	// The identity's delivery target holds the new key.
	cur, err := s.vault.Current(context.Background(), vault.Identity{Cloud: vault.CloudAWS, AccountID: account, UserName: "payments-app"})
	if err != nil {
		t.Fatal(err)
	}
	if targets := text(t, ctx, "#targets"); !strings.Contains(targets, "secrets_manager:eu-west-1:keyward/payments-app") ||
		!strings.Contains(targets, cur.AccessKeyID) || !strings.Contains(targets, "yes") {
		t.Fatalf("the identity's delivery targets: %s", targets)
	}
	shot(t, ctx, "history")
	// An identity no team owns is rotated from its own page, by an operator.
	s.cloud.AddUser(account, "legacy-app", "/", nil)
	if err := chromedp.Do(ctx, chromedp.Navigate(s.srv.URL+"/ui/identities/"+account+"/legacy-app"), chromedp.WaitVisible(chromedp.CSS("h2")),
		chromedp.Click(chromedp.CSS(`main form[action$="/legacy-app/rotate"] button`)), chromedp.WaitVisible(chromedp.CSS("#confirm")),
		chromedp.Click(chromedp.CSS("#confirm")), chromedp.WaitVisible(chromedp.CSS("#outcome"))); err != nil {
		t.Fatal(err)
	}
	waitRotated(t, ctx)
	if v := testenv.Axe(t, ctx); len(v) > 0 {
		t.Errorf("rotation page: axe-core finds:\n%s", strings.Join(v, "\n"))
	}
	// A state filter that matches nothing; a bad one is refused.
	if err := chromedp.Do(ctx, chromedp.Navigate(s.srv.URL+"/ui/inventory?state=blocked"), chromedp.WaitVisible(chromedp.CSS("tbody"))); err != nil {
		t.Fatal(err)
	}
	if body := text(t, ctx, "tbody"); !strings.Contains(body, "No identity matches") {
		t.Fatalf("blocked filter: %s", body)
	}
	if err := chromedp.Do(ctx, chromedp.Navigate(s.srv.URL+"/ui/inventory?state=<b>"), chromedp.WaitVisible(chromedp.CSS("main h1"))); err != nil {
		t.Fatal(err)
	}
	if h := text(t, ctx, "main h1"); h != "Bad filter" {
		t.Fatalf("a bad state: %q", h)
	}
}

// waitRotated reloads a rotation's page until it says the rotation finished with a new key.
func waitRotated(t *testing.T, ctx context.Context) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; {
		if got := text(t, ctx, "#outcome"); strings.HasPrefix(got, "rotated") {
			return
		} else if time.Now().After(deadline) {
			t.Fatalf("the rotation did not finish: %q", got)
		}
		time.Sleep(500 * time.Millisecond)
		_ = chromedp.Do(ctx, chromedp.Reload())
	}
}

// Every page names its permission where it is registered, and the table of them is as meant: the
// pages of a secret or an action need what the API's routes of the same need.
func TestPagePermissions(t *testing.T) {
	s := newSite(t)
	ui := &web.UI{Auth: s.svc, Sessions: s.db.UISessions()}
	ui.Handler()
	want := map[string]auth.Permission{
		"GET /ui/login": auth.Public, "POST /ui/login": auth.Public, "GET /ui/sso": auth.Public, "GET /ui/sso/callback": auth.Public, "POST /ui/logout": auth.Authenticated, "GET /ui/{$}": auth.Authenticated,
		"POST /ui/teams/{team}/reveal": auth.ReadCredentials, "GET /ui/inventory": auth.ReadInventory,
		"GET /ui/identities/{account}/{user}": auth.ReadInventory, "POST /ui/teams/{team}/rotate": auth.Rotate, "POST /ui/identities/{account}/{user}/rotate": auth.Rotate,
		"GET /ui/rotations/{id}": auth.Rotate, "GET /ui/mfa": auth.Authenticated, "POST /ui/mfa": auth.Authenticated,
		"GET /ui/audit": auth.ReadAudit, "GET /ui/audit/verify": auth.ReadAudit, "GET /ui/audit/export": auth.ReadAudit,
		"GET /ui/reports": auth.ReadReports, "GET /ui/reports/compliance.html": auth.ReadReports,
		"GET /ui/admin": auth.Administer, "POST /ui/admin/{action}": auth.Administer,
	}
	got := map[string]auth.Permission{}
	for _, p := range ui.Pages() {
		got[p.Pattern] = p.Perm
	}
	for pattern, perm := range want {
		if got[pattern] != perm {
			t.Errorf("%s: %q, want %q", pattern, got[pattern], perm)
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d pages, %d in the table", len(got), len(want))
	}
}

// A session-only team's Reveal shows short-lived session credentials (with their token), never the
// long-lived key, and the read is recorded as a session.
func TestRevealSessionOnly(t *testing.T) {
	s := newSite(t)
	ctx := context.Background()
	s.cloud.AddUser(account, "batch-app", "/", nil)
	if _, err := s.svc.AddTeam(ctx, "cli:test", auth.Team{Name: "batch", SessionOnly: true,
		Identity: vault.Identity{Cloud: vault.CloudAWS, AccountID: account, UserName: "batch-app"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.svc.AddUser(ctx, "cli:test", "olga", auth.RoleOperator, []string{"batch"}, password); err != nil {
		t.Fatal(err)
	}
	b := testenv.Browser(t)
	if err := s.signIn(b, "olga", ""); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(b, chromedp.Click(chromedp.CSS(`form[action="/ui/teams/batch/reveal"] button`)), chromedp.WaitVisible(chromedp.CSS("#token"))); err != nil {
		t.Fatal(err)
	}
	shot(t, b, "reveal-session")
	keyID, _ := chromedp.Run(b, chromedp.Value(chromedp.CSS("#key-id")))
	token, _ := chromedp.Run(b, chromedp.Value(chromedp.CSS("#token")))
	cur, err := s.vault.Current(ctx, vault.Identity{Cloud: vault.CloudAWS, AccountID: account, UserName: "batch-app"})
	if err != nil {
		t.Fatal(err)
	}
	if token == "" || keyID == "" || keyID == cur.AccessKeyID {
		t.Fatalf("session credentials: key %q (the long-lived one is %q), token %d characters", keyID, cur.AccessKeyID, len(token))
	}
	if html, _ := chromedp.Run(b, chromedp.OuterHTML(chromedp.CSS("html"))); strings.Contains(html, cur.SecretAccessKey.Reveal()) {
		t.Fatal("the page shows the long-lived secret")
	}
	recs, _, _ := s.trail.Find(ctx, audit.Filter{Action: "key.read", Limit: 10})
	if len(recs) != 1 || recs[0].Detail["type"] != "session" || recs[0].Detail["via"] != "web" {
		t.Fatalf("read records: %+v", recs)
	}
}

// TestFaviconAndRobots: /favicon.ico is an icon a browser can show (an ICO holding a 32×32 PNG), and
// robots.txt keeps every crawler out.
func TestFaviconAndRobots(t *testing.T) {
	s := newSite(t)
	res, err := http.Get(s.srv.URL + "/favicon.ico")
	if err != nil {
		t.Fatal(err)
	}
	ico, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "image/x-icon" || len(ico) < 22 ||
		!bytes.Equal(ico[:6], []byte{0, 0, 1, 0, 1, 0}) {
		t.Fatalf("favicon: %d %q, %d bytes", res.StatusCode, res.Header.Get("Content-Type"), len(ico))
	}
	size, offset := binary.LittleEndian.Uint32(ico[14:]), binary.LittleEndian.Uint32(ico[18:])
	if int(offset+size) != len(ico) {
		t.Fatalf("favicon: entry says %d bytes at %d of %d", size, offset, len(ico))
	}
	img, err := png.Decode(bytes.NewReader(ico[offset:]))
	if err != nil || img.Bounds().Dx() != 32 || img.Bounds().Dy() != 32 {
		t.Fatalf("favicon's image: %v", err)
	}
	res, err = http.Get(s.srv.URL + "/robots.txt")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || string(body) != "User-agent: *\nDisallow: /\n" {
		t.Fatalf("robots.txt: %d %q", res.StatusCode, body)
	}
}
