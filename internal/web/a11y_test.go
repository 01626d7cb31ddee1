package web_test

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/keyward/keyward/internal/testenv"
	"github.com/keyward/keyward/internal/vault"
)

// tabWalk presses Tab through the page from its start, as a keyboard user would, and returns the
// visible controls (links, buttons, fields) that Tab never reached, and those it reached without a
// visible focus mark.
func tabWalk(t *testing.T, ctx context.Context) (missed, unmarked []string) {
	t.Helper()
	n, err := chromedp.Run(ctx, chromedp.Evaluate[int](`(() => {
		const els = Array.from(document.querySelectorAll('a[href], button, input:not([type=hidden]), select, textarea, summary'))
			.filter(e => !e.disabled && e.getClientRects().length > 0);
		els.forEach((e, i) => e.dataset.kwTab = i);
		if (document.activeElement) document.activeElement.blur();
		return els.length; })()`))
	if err != nil {
		t.Fatal(err)
	}
	reached := map[string]bool{}
	// A date field takes a Tab for each of its parts: allow several per control.
	for range 6*n + 2 {
		if len(reached) == n {
			break
		}
		type focus struct {
			Tab     string `json:"tab"`
			Outline string `json:"outline"`
			HTML    string `json:"html"`
		}
		if err := chromedp.Do(ctx, chromedp.KeyEvent(kb.Tab)); err != nil {
			t.Fatal(err)
		}
		f, err := chromedp.Run(ctx, chromedp.Evaluate[focus](`(() => { const e = document.activeElement;
			if (!e || !e.dataset || e.dataset.kwTab === undefined) return {tab: '', outline: '', html: ''};
			return {tab: e.dataset.kwTab, outline: getComputedStyle(e).outlineStyle, html: e.outerHTML.slice(0, 80)}; })()`))
		if err != nil {
			t.Fatal(err)
		}
		if f.Tab == "" || reached[f.Tab] {
			continue
		}
		reached[f.Tab] = true
		if f.Outline == "none" {
			unmarked = append(unmarked, f.HTML)
		}
	}
	for i := range n {
		if !reached[fmt.Sprint(i)] {
			html, _ := chromedp.Run(ctx, chromedp.Evaluate[string](fmt.Sprintf(`document.querySelector('[data-kw-tab="%d"]').outerHTML.slice(0, 80)`, i)))
			missed = append(missed, html)
		}
	}
	return missed, unmarked
}

// TestKeyboard: every page an administrator sees can be worked with the keyboard alone — Tab
// reaches every link, button and field in turn, each with a visible focus mark — and a member
// reveals a key with Tab and Enter.
func TestKeyboard(t *testing.T) {
	s := newSite(t)
	ctx := testenv.Browser(t)
	if err := s.signIn(ctx, "ada", s.code("ada")); err != nil {
		t.Fatal(err)
	}
	for _, page := range []string{"/ui/", "/ui/inventory", "/ui/identities/" + account + "/" + url.PathEscape("payments-app"),
		"/ui/audit", "/ui/admin", "/ui/mfa"} {
		if err := chromedp.Do(ctx, chromedp.Navigate(s.srv.URL+page), chromedp.WaitVisible(chromedp.CSS("main h1"))); err != nil {
			t.Fatal(err)
		}
		if h := text(t, ctx, "main h1"); h == "Not allowed" || h == "Not found" {
			t.Fatalf("%s: %q", page, h)
		}
		missed, unmarked := tabWalk(t, ctx)
		if len(missed) > 0 || len(unmarked) > 0 {
			t.Errorf("%s: Tab never reaches %q; no visible focus on %q", page, missed, unmarked)
		}
		if bad, size := unlabelled(t, ctx); len(bad) > 0 || size > 200<<10 {
			t.Errorf("%s: unlabelled %v, %d bytes", page, bad, size)
		}
		if v := testenv.Axe(t, ctx); len(v) > 0 {
			t.Errorf("%s: axe-core finds %d violations:\n%s", page, len(v), strings.Join(v, "\n"))
		}
	}

	// A member reveals the team's key without a mouse.
	mctx := testenv.Browser(t)
	if err := s.signIn(mctx, "mia", s.code("mia")); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(mctx, chromedp.Focus(chromedp.CSS(`form[action="/ui/teams/payments/reveal"] button`)), chromedp.KeyEvent(kb.Enter),
		chromedp.WaitVisible(chromedp.CSS("#secret"))); err != nil {
		t.Fatalf("revealing with the keyboard: %v", err)
	}
	if v := testenv.Axe(t, mctx); len(v) > 0 {
		t.Errorf("a member's revealed key: axe-core finds:\n%s", strings.Join(v, "\n"))
	}
	for _, page := range []string{"/ui/", "/ui/mfa"} {
		if err := chromedp.Do(mctx, chromedp.Navigate(s.srv.URL+page), chromedp.WaitVisible(chromedp.CSS("main h1"))); err != nil {
			t.Fatal(err)
		}
		if v := testenv.Axe(t, mctx); len(v) > 0 {
			t.Errorf("a member's %s: axe-core finds:\n%s", page, strings.Join(v, "\n"))
		}
	}
	lctx := testenv.Browser(t)
	if err := chromedp.Do(lctx, chromedp.Navigate(s.srv.URL+"/ui/login"), chromedp.WaitVisible(chromedp.CSS("main h1"))); err != nil {
		t.Fatal(err)
	}
	if v := testenv.Axe(t, lctx); len(v) > 0 {
		t.Errorf("the sign-in page: axe-core finds:\n%s", strings.Join(v, "\n"))
	}
	if err := chromedp.Do(mctx, chromedp.Navigate(s.srv.URL+"/ui/"), chromedp.WaitVisible(chromedp.CSS("main h1")),
		chromedp.Focus(chromedp.CSS(`form[action="/ui/teams/payments/reveal"] button`)), chromedp.KeyEvent(kb.Enter),
		chromedp.WaitVisible(chromedp.CSS("#secret"))); err != nil {
		t.Fatal(err)
	}
	// …and copies it: the Copy button puts the secret itself on the clipboard.
	for _, name := range []string{"clipboard-read", "clipboard-write"} {
		if _, err := chromedp.CallBrowser(mctx, browser.SetPermission, browser.SetPermissionParams{
			Permission: &browser.PermissionDescriptor{Name: name}, Setting: "granted", Origin: s.srv.URL}); err != nil {
			t.Fatal(err)
		}
	}
	copyButton := chromedp.CSS(`button[data-copy="secret"]`)
	if err := chromedp.Do(mctx, chromedp.Focus(copyButton), chromedp.KeyEvent(kb.Enter)); err != nil {
		t.Fatalf("copying with the keyboard: %v", err)
	}
	if _, err := chromedp.Run(mctx, chromedp.Poll[bool](`document.querySelector('button[data-copy="secret"]').textContent === "Copied"`)); err != nil {
		t.Fatalf("the Copy button did not copy: %v", err)
	}
	clip, err := chromedp.Run(mctx, chromedp.Evaluate[string](`navigator.clipboard.readText()`, chromedp.EvalAwaitPromise))
	cur, verr := s.vault.Current(context.Background(), vault.Identity{Cloud: vault.CloudAWS, AccountID: account, UserName: "payments-app"})
	if err != nil || verr != nil || clip != cur.SecretAccessKey.Reveal() {
		t.Fatalf("the clipboard does not hold the secret (%v, %v)", err, verr)
	}
	missed, unmarked := tabWalk(t, mctx)
	if len(missed) > 0 || len(unmarked) > 0 {
		t.Errorf("the reveal page: Tab never reaches %q; no visible focus on %q", missed, unmarked)
	}
}

// TestAxeFindsViolations: the axe-core check can fail — a page with an image without a text
// alternative and a button whose name does not contain its label is reported.
func TestAxeFindsViolations(t *testing.T) {
	ctx := testenv.Browser(t)
	page := `<!doctype html><html lang="en"><head><title>bad</title></head><body><main><h1>Bad</h1>` +
		`<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw="><button aria-label="Delete everything">Rotate now</button></main></body></html>`
	if err := chromedp.Do(ctx, chromedp.Navigate("data:text/html,"+url.PathEscape(page))); err != nil {
		t.Fatal(err)
	}
	got := strings.Join(testenv.Axe(t, ctx), "\n")
	for _, rule := range []string{"image-alt", "label-content-name-mismatch"} {
		if !strings.Contains(got, rule+":") {
			t.Errorf("axe-core did not report %s:\n%s", rule, got)
		}
	}
}
