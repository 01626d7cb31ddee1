package testenv

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/chromedp/chromedp"
)

// axePath is where scripts/test.sh installs npm's axe-core (pinned there), under the module's root.
const axePath = ".cache/axe-core/node_modules/axe-core/axe.min.js"

var axeScript = sync.OnceValues(func() (string, error) {
	path := os.Getenv("KEYWARD_TEST_AXE")
	if path == "" {
		dir, err := os.Getwd()
		if err != nil {
			return "", err
		}
		for ; ; dir = filepath.Dir(dir) {
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
				path = filepath.Join(dir, axePath)
				break
			}
			if dir == filepath.Dir(dir) {
				return "", fmt.Errorf("no go.mod above the working directory")
			}
		}
	}
	b, err := os.ReadFile(path)
	return string(b), err
})

// Axe runs axe-core (Deque's accessibility engine: WCAG 2.x A and AA rules, its best practices and its
// experimental rules, label-content-name-mismatch among them)
// on the page the browser shows and returns each violation as "rule: target (help)". Without
// axe-core (scripts/test.sh installs it with npm) the test skips, or fails when
// KEYWARD_TEST_REQUIRE_SERVICES=1.
func Axe(t testing.TB, ctx context.Context) []string {
	t.Helper()
	script, err := axeScript()
	if err != nil {
		t.Setenv("KEYWARD_TEST_AXE", "")
		need(t, "KEYWARD_TEST_AXE", "axe-core's axe.min.js (npm install --prefix .cache/axe-core axe-core; scripts/test.sh does it): "+err.Error())
	}
	type violation struct {
		ID      string   `json:"id"`
		Help    string   `json:"help"`
		Targets []string `json:"targets"`
	}
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](script+";true")); err != nil {
		t.Fatalf("load axe-core: %v", err)
	}
	found, err := chromedp.Run(ctx, chromedp.Evaluate[[]violation](`axe.run(document, {resultTypes: ['violations'], runOnly: {type: 'tag',
		values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa', 'best-practice', 'experimental']}}).then(r =>
		r.violations.map(v => ({id: v.id, help: v.help, targets: v.nodes.map(n => n.target.join(' '))})))`, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("run axe-core: %v", err)
	}
	var out []string
	for _, v := range found {
		for _, target := range v.Targets {
			out = append(out, fmt.Sprintf("%s: %s (%s)", v.ID, target, v.Help))
		}
	}
	return out
}
