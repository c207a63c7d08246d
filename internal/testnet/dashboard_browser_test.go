package testnet_test

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/sallyport/sallyport/internal/testnet"
)

// The dashboard in a real browser, on a real edge and connector: the
// overview sends a browser without a session to the login form, which
// says so when the token is wrong; once logged in, a client connection
// opened later appears with its service and bytes; the connector's Revoke
// button revokes it: its tunnel goes (the table says 0 and revoked) and
// the client's held connection is closed. Full-page screenshots of the
// login error, the live overview and the page after the revoke are
// checked for readable text.
func TestDashboardInBrowser(t *testing.T) {
	chromiumPath(t) // skip (or fail with CI=true) before starting anything
	echo := testnet.Echo(t)
	e, c := setup(t, map[string]string{"echo": echo.Addr()})
	token, err := e.AdminToken()
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + e.AdminAddr().String()
	actx := startChromium(t, chromedp.WindowSize(1280, 900))
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancelTimeout := context.WithTimeout(ctx, 90*time.Second)
	defer cancelTimeout()

	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/ui/")); err != nil {
		t.Fatalf("chromium: open the dashboard: %v", err)
	}
	waitPage(t, ctx, `location.pathname === "/ui/login"`, "the login form, for a browser without a session")
	logIn := func(tok string) {
		t.Helper()
		if err := chromedp.Do(ctx, chromedp.SetValue("#token", tok), chromedp.Click("#login")); err != nil {
			t.Fatalf("chromium: log in: %v", err)
		}
	}
	logIn("not-the-token")
	waitPage(t, ctx, `(document.querySelector("#error") || {}).textContent?.startsWith("Wrong token")`, "the wrong token's error")
	checkReadable(t, ctx, "dashboard-login-refused", chromedp.FullScreenshot(100), []string{"h2", "#error", "label"})

	logIn(token)
	waitPage(t, ctx, `location.pathname === "/ui/" && !!document.querySelector("#connectors")`, "the overview after the login")
	if n := pageValue[int](t, ctx, `document.querySelectorAll("#live tbody tr").length`); n != 0 {
		t.Fatalf("%d live connections listed before any client connected", n)
	}

	// A client connects after the page has loaded: the page's reload
	// shows it, with the bytes it sent and got back.
	client := e.Dial(t, "echo")
	client.SetDeadline(time.Now().Add(60 * time.Second))
	msg := []byte(strings.Repeat("0123456789", 300))
	if _, err := client.Write(msg); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(client, make([]byte, len(msg))); err != nil {
		t.Fatal(err)
	}
	row := `Array.from(document.querySelectorAll("#live tbody tr"), r => r.querySelector(".service").textContent + " " + r.querySelector(".client").textContent + " " + r.querySelector(".bytes-in").textContent + " " + r.querySelector(".bytes-out").textContent).join("|")`
	want := fmt.Sprintf("echo %s 2.9 KiB 2.9 KiB", client.LocalAddr())
	waitPage(t, ctx, fmt.Sprintf("%s === %q", row, want), "the live connection: "+want)
	freshPage(t, ctx)
	checkReadable(t, ctx, "dashboard-live", chromedp.FullScreenshot(100),
		[]string{"h1", "#live td.service", "#live td.bytes-in", "#connectors td.name", "#connectors td.tunnels", "#connectors button.revoke", "#services td.name"})

	// Revoke through the page's button.
	site := `#connectors tr[data-connector="site-a"]`
	if n := pageValue[string](t, ctx, fmt.Sprintf(`document.querySelector('%s td.tunnels').textContent`, site)); n != "1" {
		t.Fatalf("the connectors table shows %s tunnels for site-a, want 1", n)
	}
	freshPage(t, ctx)
	if err := chromedp.Do(ctx, chromedp.Click(site+" button.revoke")); err != nil {
		t.Fatalf("chromium: click Revoke: %v", err)
	}
	// The page the button leads to says what happened, once.
	waitPage(t, ctx, `location.pathname === "/ui/" && /Connector site-a \(.*\) is revoked/.test((document.querySelector("#flash") || {}).textContent)`, "the revoke's message")
	checkReadable(t, ctx, "dashboard-revoke-message", chromedp.FullScreenshot(100), []string{"#flash", site + " td.name"})
	waitPage(t, ctx, fmt.Sprintf(`document.querySelector('%s td.tunnels').textContent === "0" && document.querySelector('%s td.state').textContent.startsWith("revoked")`, site, site),
		"site-a shown with 0 tunnels and revoked")
	if n := c.Tunnels(); n != 0 {
		t.Errorf("the connector still has %d tunnels after the revoke", n)
	}
	if _, err := client.Read(make([]byte, 1)); err == nil {
		t.Fatal("the client's connection through the revoked connector still reads")
	} else if strings.Contains(err.Error(), "timeout") {
		t.Fatalf("the client's connection through the revoked connector was not closed: %v", err)
	}
	freshPage(t, ctx)
	checkReadable(t, ctx, "dashboard-revoked", chromedp.FullScreenshot(100), []string{site + " td.state", site + " td.tunnels"})
	if n := pageValue[int](t, ctx, `document.querySelectorAll("#flash, #live tbody tr").length`); n != 0 {
		t.Errorf("after a reload the page still shows the message or a live connection (%d)", n)
	}

	// The Manage page: its audit trail has the revoke; a new keyfile is
	// shown once, with a link to save it.
	if err := chromedp.Do(ctx, chromedp.Click(`nav a[href="/ui/manage"]`)); err != nil {
		t.Fatalf("chromium: open Manage: %v", err)
	}
	waitPage(t, ctx, `location.pathname === "/ui/manage" && Array.from(document.querySelectorAll("#audit td"), td => td.textContent).includes("POST /ui/revoke")`, "the revoke in the audit trail")
	checkReadable(t, ctx, "dashboard-manage", chromedp.FullScreenshot(100), []string{"#keyfile-form label", "#grant-form button", "#audit td"})
	if err := chromedp.Do(ctx, chromedp.SetValue("#kf-name", "site-c"), chromedp.SetValue("#kf-services", "echo"),
		chromedp.Click(`#keyfile-form button[type="submit"]`)); err != nil {
		t.Fatalf("chromium: create a keyfile: %v", err)
	}
	waitPage(t, ctx, `location.pathname === "/ui/keyfile" && document.querySelector("#secret").value.includes('"name": "site-c"') && document.querySelector("#download").download === "site-c.keyfile"`,
		"the new keyfile, with its link to save it")
	checkReadable(t, ctx, "dashboard-keyfile", chromedp.FullScreenshot(100), []string{"h2", "p.flash", "#download"})
}

// pageValue evaluates expr on the page, failing the test on an error.
func pageValue[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("chromium: %s: %v", expr, err)
	}
	return v
}

// waitPage evaluates cond on the page every 100ms until it is true, for
// at most 30s; an evaluation that fails (the page reloads itself) is
// tried again.
func waitPage(t *testing.T, ctx context.Context, cond, what string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool]("!!("+cond+")"))
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			href, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`location.href + "\n" + document.body.innerText`))
			t.Fatalf("chromium: waited 30s for %s (last error %v); the page:\n%s", what, err, href)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("chromium: %s: %v", what, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// freshPage waits for the overview's next reload to complete, so that
// what follows has the page for the reload's whole interval.
func freshPage(t *testing.T, ctx context.Context) {
	t.Helper()
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[int](`window.sallyportMark = 1`)); err != nil {
		t.Fatalf("chromium: mark the page: %v", err)
	}
	waitPage(t, ctx, `window.sallyportMark === undefined && document.readyState === "complete"`, "the page's reload")
}
