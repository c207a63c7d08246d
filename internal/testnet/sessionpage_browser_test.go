package testnet_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"image"
	"image/png"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/sallyport/sallyport/internal/admin"
	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/samplelog"
	"github.com/sallyport/sallyport/internal/sessionpage"
)

// The README's promise for the session page, in a real browser: the edge
// (https, a real certificate for edge.test) serves the page at a link
// whose token is in the fragment; the page tails a service that requires
// a session (a log written on the trusted side, through a real connector)
// and drops the token from its address; serving the page uses nothing up,
// the WebSocket does; the same link opened again shows the refusal, in
// words. Screenshots of both are taken and checked for readable text.
func TestSessionPageTailsLogThenRefusesReuse(t *testing.T) {
	chromiumPath(t) // skip (or fail with CI=true) before starting anything
	cs := newCerts(t, "test session page CA")
	files, _, pair := cs.issue(t, "edge", false, "edge.test")
	e := startListenerEdge(t, []config.Listener{
		{Kind: config.KindHTTPS, EdgeHosts: []string{"edge.test"}, Certificates: []config.CertificateFiles{files}},
	}, map[string]config.EdgeService{"logs": {Policy: config.Policy{RequireSession: true}}})
	logL, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	logs := &samplelog.Log{Interval: 100 * time.Millisecond}
	lctx, lcancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { logs.Serve(lctx, logL) })
	t.Cleanup(func() { lcancel(); wg.Wait() })
	e.connect(t, map[string]string{"logs": logL.Addr().String()}, nil)
	token, err := e.AdminToken()
	if err != nil {
		t.Fatal(err)
	}
	ac := &admin.Client{Addr: e.AdminAddr().String(), Token: token}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	s, err := ac.CreateSession(ctx, admin.SessionRequest{Service: "logs"})
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(e.addr(0))
	pageURL := "https://edge.test:" + port + sessionpage.Path
	if s.Page != pageURL+"#"+s.Token {
		t.Fatalf("page link %q, want %s#<token>", s.Page, pageURL)
	}

	// The page as any HTTP client gets it: the same for all, with a
	// strict policy, and the session still unused after it.
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: cs.pool, ServerName: "edge.test"}, DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, e.addr(0))
	}}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get(pageURL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if csp := resp.Header.Get("Content-Security-Policy"); resp.StatusCode != http.StatusOK || !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "connect-src 'self'") {
		t.Fatalf("GET the page: %s, Content-Security-Policy %q", resp.Status, csp)
	}
	sessionState(t, ac, s.ID, "unused")

	// Chromium resolves edge.test to the listener and accepts exactly the
	// edge's key (its certificate is signed by the test CA, which the
	// browser does not know): TLS is real, only the anchor is pinned.
	spki := sha256.Sum256(pair.Leaf.RawSubjectPublicKeyInfo)
	actx := startChromium(t,
		chromedp.Flag("host-resolver-rules", "MAP edge.test 127.0.0.1"),
		chromedp.Flag("ignore-certificate-errors-spki-list", base64.StdEncoding.EncodeToString(spki[:])),
		chromedp.WindowSize(900, 700))
	first, cancelFirst := chromedp.NewContext(actx)
	defer cancelFirst()
	if err := chromedp.Do(first, chromedp.Navigate(s.Page)); err != nil {
		t.Fatalf("chromium: load the page: %v", err)
	}
	opened := logs.Count()
	// Wait for a line the back-end wrote after the page was loaded.
	maxLine := `Math.max(0, ...Array.from(document.querySelectorAll("#log div"), d => +((/log line (\d+)/.exec(d.textContent) || [0, 0])[1])))`
	if _, err := chromedp.Run(first, chromedp.Poll[bool](fmt.Sprintf("%s > %d", maxLine, opened), chromedp.WithPollingTimeout(30*time.Second))); err != nil {
		state, _ := chromedp.Run(first, chromedp.Evaluate[string](`document.getElementById("state").textContent`))
		t.Fatalf("no log line after %d on the page (its state: %q): %v", opened, state, err)
	}
	href, err := chromedp.Run(first, chromedp.Evaluate[string](`location.href`))
	if err != nil || href != pageURL {
		t.Fatalf("the page's address is %q (%v), want %s: the token must leave it", href, err, pageURL)
	}
	sessionState(t, ac, s.ID, "used")
	readable(t, first, "live", "#state", "#log div")

	// The same link, in a new tab: refused, in words, on the page.
	second, cancelSecond := chromedp.NewContext(first)
	defer cancelSecond()
	if err := chromedp.Do(second, chromedp.Navigate(s.Page)); err != nil {
		t.Fatalf("chromium: load the page again: %v", err)
	}
	state, err := chromedp.Run(second, chromedp.Poll[string](`document.getElementById("state").className === "closed" && document.getElementById("state").textContent`, chromedp.WithPollingTimeout(30*time.Second)))
	if err != nil || state != "This link was already used. A link opens once; ask for a new one." {
		t.Fatalf("the second use shows %q (%v), want the refusal", state, err)
	}
	if n, _ := chromedp.Run(second, chromedp.Evaluate[int](`document.querySelectorAll("#log div").length`)); n != 0 {
		t.Errorf("the refused page shows %d log lines", n)
	}
	readable(t, second, "reused", "#state")
	// The first tab still tails.
	now := logs.Count()
	if _, err := chromedp.Run(first, chromedp.Poll[bool](fmt.Sprintf("%s > %d", maxLine, now), chromedp.WithPollingTimeout(30*time.Second))); err != nil {
		t.Fatalf("the first page stopped tailing after the refused reuse: %v", err)
	}
}

// sessionState wants session id in state.
func sessionState(t *testing.T, ac *admin.Client, id, state string) {
	t.Helper()
	ss, err := ac.Sessions(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range ss {
		if s.ID == id {
			if s.State != state {
				t.Fatalf("session %s is %s, want %s", id, s.State, state)
			}
			return
		}
	}
	t.Fatalf("session %s not listed", id)
}

// readable takes a screenshot of the page in ctx (saved as name.png in the
// test's temporary directory, its path logged) and checks that the first
// element of each selector shows text: a box within the screenshot, a
// text color with at least WCAG AA contrast (4.5:1) against the
// background it sits on, and ink in the screenshot inside that box.
func readable(t *testing.T, ctx context.Context, name string, selectors ...string) {
	t.Helper()
	checkReadable(t, ctx, name, chromedp.CaptureScreenshot(), selectors)
}

// checkReadable is readable with the screenshot that shoot takes (of the
// viewport, or of the whole page from its top).
func checkReadable(t *testing.T, ctx context.Context, name string, shoot chromedp.Action[[]byte], selectors []string) {
	t.Helper()
	// Top of the page: the page follows the tail only at the bottom, so
	// the boxes stay put while lines arrive.
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[any](`window.scrollTo(0, 0)`)); err != nil {
		t.Fatal(err)
	}
	type box struct {
		X, Y, W, H float64
		Color, Bg  string
		DPR        float64
		Text       string
	}
	boxes := make([]box, len(selectors))
	for i, sel := range selectors {
		b, err := chromedp.Run(ctx, chromedp.Evaluate[box](fmt.Sprintf(`(() => {
			const el = document.querySelector(%q);
			const r = el.getBoundingClientRect();
			let bg = "rgb(255, 255, 255)";
			for (let n = el; n; n = n.parentElement) {
				const c = getComputedStyle(n).backgroundColor;
				if (c !== "rgba(0, 0, 0, 0)" && c !== "transparent") { bg = c; break; }
			}
			return {X: r.x, Y: r.y, W: r.width, H: r.height, Color: getComputedStyle(el).color, Bg: bg, DPR: devicePixelRatio, Text: el.textContent};
		})()`, sel)))
		if err != nil {
			t.Fatalf("%s: %s: %v", name, sel, err)
		}
		boxes[i] = b
	}
	shot, err := chromedp.Run(ctx, shoot)
	if err != nil {
		t.Fatalf("%s: screenshot: %v", name, err)
	}
	path := filepath.Join(t.TempDir(), name+".png")
	if err := os.WriteFile(path, shot, 0o600); err != nil {
		t.Fatal(err)
	}
	if keep := os.Getenv("SALLYPORT_TEST_SCREENSHOTS"); keep != "" {
		// A directory to keep them in, to look at after the test.
		path = filepath.Join(keep, name+".png")
		if err := os.WriteFile(path, shot, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("screenshot of the %s page: %s", name, path)
	img, err := png.Decode(bytes.NewReader(shot))
	if err != nil {
		t.Fatalf("%s: the screenshot is no PNG: %v", name, err)
	}
	if sz := img.Bounds().Size(); sz.X < 400 || sz.Y < 300 {
		t.Fatalf("%s: screenshot of %v, want at least 400x300", name, sz)
	}
	for i, b := range boxes {
		sel := selectors[i]
		if b.W < 1 || b.H < 1 || strings.TrimSpace(b.Text) == "" {
			t.Fatalf("%s: %s is not visible: box %.0fx%.0f, text %q", name, sel, b.W, b.H, b.Text)
		}
		fg, bg := parseRGB(t, b.Color), parseRGB(t, b.Bg)
		if c := contrast(fg, bg); c < 4.5 {
			t.Errorf("%s: %s: text %s on %s has contrast %.1f:1, want at least 4.5:1", name, sel, b.Color, b.Bg, c)
		}
		r := image.Rect(int(b.X*b.DPR), int(b.Y*b.DPR), int((b.X+b.W)*b.DPR), int((b.Y+b.H)*b.DPR)).Intersect(img.Bounds())
		if r.Dx()*r.Dy() < 1 || r != image.Rect(int(b.X*b.DPR), int(b.Y*b.DPR), int((b.X+b.W)*b.DPR), int((b.Y+b.H)*b.DPR)) {
			t.Fatalf("%s: %s (%v) is not inside the screenshot %v", name, sel, r, img.Bounds())
		}
		ink := 0
		for y := r.Min.Y; y < r.Max.Y; y++ {
			for x := r.Min.X; x < r.Max.X; x++ {
				pr, pg, pb, _ := img.At(x, y).RGBA()
				if math.Abs(float64(pr>>8)-bg[0])+math.Abs(float64(pg>>8)-bg[1])+math.Abs(float64(pb>>8)-bg[2]) > 96 {
					ink++
				}
			}
		}
		if ink < 20 {
			t.Errorf("%s: %s shows %d ink pixels in its box %v of the screenshot, want text", name, sel, ink, r)
		}
	}
}

// parseRGB reads a CSS computed color, "rgb(r, g, b)" or "rgba(r, g, b, a)".
func parseRGB(t *testing.T, s string) [3]float64 {
	t.Helper()
	var c [3]float64
	inner := strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(s, "rgba("), "rgb("), ")")
	parts := strings.Split(inner, ",")
	if len(parts) < 3 {
		t.Fatalf("color %q", s)
	}
	for i := range 3 {
		if _, err := fmt.Sscan(strings.TrimSpace(parts[i]), &c[i]); err != nil {
			t.Fatalf("color %q: %v", s, err)
		}
	}
	return c
}

// contrast is the WCAG contrast ratio of two sRGB colors.
func contrast(a, b [3]float64) float64 {
	lum := func(c [3]float64) float64 {
		var l [3]float64
		for i, v := range c {
			v /= 255
			if v <= 0.03928 {
				l[i] = v / 12.92
			} else {
				l[i] = math.Pow((v+0.055)/1.055, 2.4)
			}
		}
		return 0.2126*l[0] + 0.7152*l[1] + 0.0722*l[2]
	}
	la, lb := lum(a), lum(b)
	if la < lb {
		la, lb = lb, la
	}
	return (la + 0.05) / (lb + 0.05)
}
