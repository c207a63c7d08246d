package testnet_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// servePage serves html at / on a loopback port of its own (another
// origin than the edge's) and returns its URL.
func servePage(t *testing.T, html string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write([]byte(html))
	})}
	var wg sync.WaitGroup
	wg.Go(func() { srv.Serve(l) })
	t.Cleanup(func() { srv.Close(); wg.Wait() })
	return "http://" + l.Addr().String() + "/"
}

// chromiumPath finds Debian's chromium; the test is skipped, loudly, when
// it is missing, and fails with CI=true (CI installs it from
// .ci/packages.txt).
func chromiumPath(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("no chromium on PATH, and CI=true: the browser tests must run (apt-get install chromium; .ci/packages.txt)")
	}
	t.Skip("SKIPPED: no chromium on PATH (apt-get install chromium); the browser test did not run")
	return ""
}

// runChromium loads url in headless Chromium, waits until the page sets
// window.result (a JSON string) and decodes it into out.
func runChromium(t *testing.T, url string, out any) {
	t.Helper()
	actx := startChromium(t)
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancelTimeout := context.WithTimeout(ctx, 60*time.Second)
	defer cancelTimeout()
	if err := chromedp.Do(ctx, chromedp.Navigate(url)); err != nil {
		t.Fatalf("chromium: load %s: %v", url, err)
	}
	result, err := chromedp.Run(ctx, chromedp.Poll[string](`window.result`, chromedp.WithPollingTimeout(30*time.Second)))
	if err != nil {
		t.Fatalf("chromium: wait for the page's result: %v", err)
	}
	if err := json.Unmarshal([]byte(result), out); err != nil {
		t.Fatalf("page result %q: %v", result, err)
	}
}

// startChromium returns the allocator context of a headless Chromium with
// a fresh profile and the extra command-line flags, ended with the test.
func startChromium(t *testing.T, flags ...chromedp.ExecAllocatorOption) context.Context {
	t.Helper()
	exe := chromiumPath(t)
	// A fresh profile; Chromium's helpers may still write to it for a
	// moment after it exits, so removal is retried.
	dir, err := os.MkdirTemp("", "sallyport-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for range 50 {
			if os.RemoveAll(dir) == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(exe),
		chromedp.UserDataDir(dir),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), append(opts, flags...)...)
	t.Cleanup(cancelAlloc)
	return actx
}
