package web_test

import (
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/keyward/keyward/internal/testenv"
)

// layoutProblems lists what a reader of the page at this width would trip over: the page scrolls
// sideways, a header control leaves the header or the screen, an element of main sticks out of
// main (outside a container that scrolls on purpose), a date wraps.
const layoutProblems = `(() => {
	const out = [], vw = window.innerWidth;
	const name = e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') + (e.className && typeof e.className === 'string' ? '.' + e.className.split(' ').join('.') : '') + ' "' + (e.textContent || '').trim().slice(0, 30) + '"';
	if (document.documentElement.scrollWidth > vw + 1) out.push('the page scrolls sideways: ' + document.documentElement.scrollWidth + 'px wide in ' + vw + 'px');
	const header = document.querySelector('header.top').getBoundingClientRect();
	for (const e of document.querySelectorAll('header.top a, header.top button, header.top .who')) {
		const r = e.getBoundingClientRect();
		if (r.left < -1 || r.right > vw + 1 || r.top < header.top - 1 || r.bottom > header.bottom + 1) out.push('out of the header: ' + name(e));
	}
	const main = document.querySelector('main').getBoundingClientRect();
	const scrolls = e => { for (let p = e.parentElement; p && p.tagName !== 'MAIN'; p = p.parentElement) { const o = getComputedStyle(p).overflowX; if (o === 'auto' || o === 'scroll') return true; } return false; };
	for (const e of document.querySelectorAll('main *')) {
		const r = e.getBoundingClientRect();
		if (r.width === 0 || scrolls(e)) continue;
		if (r.right > main.right + 1 || r.left < main.left - 1) out.push('sticks out of main: ' + name(e) + ' ' + Math.round(r.left) + '..' + Math.round(r.right) + ' in ' + Math.round(main.left) + '..' + Math.round(main.right));
	}
	for (const e of document.querySelectorAll('time')) {
		if (e.getClientRects().length > 1) out.push('a date wraps: ' + name(e));
	}
	return out.slice(0, 12);
})()`

// TestNarrowAndWideScreens: every page works at 390 px (a phone) and 1366 px (a laptop) — nothing
// scrolls sideways but a table meant to, the navigation and Sign out stay in the header, dates do
// not wrap — for an administrator, an auditor's pages included, and for a member with a key shown.
func TestNarrowAndWideScreens(t *testing.T) {
	s := newSite(t)
	ctx := testenv.Browser(t)
	if err := s.signIn(ctx, "ada", s.code("ada")); err != nil {
		t.Fatal(err)
	}
	mctx := testenv.Browser(t)
	if err := s.signIn(mctx, "mia", s.code("mia")); err != nil {
		t.Fatal(err)
	}
	type visit struct {
		ctxName, page string
		then          chromedp.Action[chromedp.Void]
	}
	reveal := chromedp.Steps(chromedp.Click(chromedp.CSS(`form[action="/ui/teams/payments/reveal"] button`)), chromedp.WaitVisible(chromedp.CSS("#secret")))
	visits := []visit{
		{"admin", "/ui/", nil}, {"admin", "/ui/inventory", nil},
		{"admin", "/ui/identities/" + account + "/" + url.PathEscape("payments-app"), nil},
		{"admin", "/ui/audit", nil}, {"admin", "/ui/audit/verify", nil}, {"admin", "/ui/admin", nil}, {"admin", "/ui/reports", nil},
		{"admin", "/ui/mfa", nil},
		{"member", "/ui/", nil}, {"member", "/ui/", reveal},
	}
	for _, width := range []int64{360, 390, 1366} {
		for _, v := range visits {
			c := ctx
			if v.ctxName == "member" {
				c = mctx
			}
			acts := []chromedp.Action[chromedp.Void]{chromedp.EmulateViewport(width, 844), chromedp.Navigate(s.srv.URL + v.page),
				chromedp.WaitVisible(chromedp.CSS("main h1"))}
			if v.then != nil {
				acts = append(acts, v.then)
			}
			if err := chromedp.Do(c, acts...); err != nil {
				t.Fatalf("%s at %d px: %v", v.page, width, err)
			}
			problems, err := chromedp.Run(c, chromedp.Evaluate[[]string](layoutProblems))
			if err != nil {
				t.Fatal(err)
			}
			if len(problems) > 0 {
				t.Errorf("%s's %s at %d px:\n  %s", v.ctxName, v.page, width, strings.Join(problems, "\n  "))
			}
			shot(t, c, fmt.Sprintf("w%d-%s%s", width, v.ctxName, strings.NewReplacer("/", "-", "%", "").Replace(v.page)))
		}
	}
}
