package testenv

import (
	"context"
	"os/exec"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// Browser starts a headless Chromium (Debian's chromium package; .ci/run installs it) for the
// test and returns a context whose chromedp actions run in one tab. Without the browser the test
// skips, or fails when KEYWARD_TEST_REQUIRE_SERVICES=1.
func Browser(t testing.TB) context.Context {
	t.Helper()
	var path string
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			path = p
			break
		}
	}
	if path == "" {
		t.Setenv("KEYWARD_TEST_BROWSER", "")
		need(t, "KEYWARD_TEST_BROWSER", "a headless Chromium (apt-get install chromium)")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox, // tests run as root in CI containers
		chromedp.DisableGPU,
		chromedp.WindowSize(1280, 900),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	// Start the browser now (on the context itself: a timeout here would stop the whole browser), so
	// a failure to start is reported as such.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start headless Chromium (%s): %v", path, err)
	}
	// Every later action of the test is bounded: a page that never shows what a test waits for
	// fails the test instead of hanging it.
	bounded, cancelBounded := context.WithTimeout(ctx, 2*time.Minute)
	t.Cleanup(cancelBounded)
	return bounded
}
