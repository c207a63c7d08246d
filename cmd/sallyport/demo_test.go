package main_test

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// The README's first command: the demo prints what to try, what it prints
// works, and Ctrl-C stops it cleanly and leaves nothing behind.
func TestDemoPrintsWhatWorksAndCleansUp(t *testing.T) {
	tmp := t.TempDir()
	p := start(t, "demo", []string{"TMPDIR=" + tmp}, "demo", "--run-for", "20s", "--web-port", "0", "--echo-port", "0", "--page-port", "0")
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(p.Stdout.String(), "Press Ctrl-C to stop.") {
		if p.Exited() {
			t.Fatalf("the demo exited (%s) before it was ready; stdout:\n%s", p.State(), p.Stdout.String())
		}
		if time.Now().After(deadline) {
			t.Fatalf("the demo printed no instructions within 30s; stdout:\n%s", p.Stdout.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	out := p.Stdout.String()
	find := func(re string) string {
		t.Helper()
		m := regexp.MustCompile(re).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("the demo's instructions have no line matching %s:\n%s", re, out)
		}
		return m[1]
	}
	webAddr := find(`(?m)^\s*curl http://(127\.0\.0\.1:\d+)/\s*$`)
	echoAddr := find(`curl telnet://(127\.0\.0\.1:\d+)`)
	statusCmd := find(`(?m)^\s*(\S+) status --data \S+\s*$`)
	dataDir := find(`status --data (\S+)`)
	pageBase, pageToken := find(`(?m)^\s*(http://localhost:\d+)/\.sallyport/view#\S+\s*$`), find(`/\.sallyport/view#(\S+)`)
	dashboard, tokenFile := find(`(?m)^\s*(http://127\.0\.0\.1:\d+/ui/)\s*$`), find(`"cat (\S+)" prints`)

	// The curl line, as curl would do it.
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get("http://" + webAddr + "/")
	if err != nil {
		t.Fatalf("GET the demo's web address: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "Hello from the trusted network") {
		t.Fatalf("GET http://%s/: %s %q (%v), want 200 and the greeting from the trusted network", webAddr, resp.Status, body, err)
	}
	// The nc line.
	echoes(t, echoAddr, []byte("a line typed into nc\n"))
	// The page link: the page, then its WebSocket tails the logs back-end.
	resp, err = client.Get(pageBase + "/.sallyport/view")
	if err != nil {
		t.Fatalf("GET the demo's page: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Security-Policy") == "" {
		t.Fatalf("GET %s/.sallyport/view: %s, want 200 with a Content-Security-Policy", pageBase, resp.Status)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(pageBase, "http")+"/s/", &websocket.DialOptions{Subprotocols: []string{"sallyport.session", "sallyport.session." + pageToken}})
	if err != nil {
		t.Fatalf("the page's WebSocket: %v", err)
	}
	_, msg, err := ws.Read(ctx)
	ws.CloseNow()
	if err != nil || !strings.Contains(string(msg), "log line ") {
		t.Fatalf("the page's WebSocket read %q (%v), want log lines", msg, err)
	}
	// The dashboard line: its address logs in with the token in the file it names.
	token, err := os.ReadFile(tokenFile)
	if err != nil {
		t.Fatalf("the dashboard's token file: %v", err)
	}
	form := url.Values{"token": {strings.TrimSpace(string(token))}}
	req, _ := http.NewRequest(http.MethodPost, strings.TrimSuffix(dashboard, "/")+"/login", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", strings.TrimSuffix(dashboard, "/ui/"))
	noFollow := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err = noFollow.Do(req)
	if err != nil {
		t.Fatalf("log in to the demo's dashboard: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || len(resp.Cookies()) != 1 {
		t.Fatalf("log in to %s with the token in %s: %s, cookies %v; want 303 and a session cookie", dashboard, tokenFile, resp.Status, resp.Cookies())
	}
	// The status line, as printed: the binary the way it was invoked.
	if statusCmd != bin {
		t.Errorf("the demo says to run %q status; it was started as %q", statusCmd, bin)
	}
	st := (&edgeProc{data: dataDir}).status(t)
	if st.tunnels["web"] != 1 || st.tunnels["echo"] != 1 || st.tunnels["logs"] != 1 || len(st.connectors) != 1 || st.connectors[0].name != "demo-site" {
		t.Errorf("status --data %s shows:\n%s\nwant web, echo and logs with 1 tunnel each, from demo-site", dataDir, st.text)
	}

	p.signal(t, syscall.SIGINT)
	if code := p.wait(t, 15*time.Second); code != 0 {
		t.Fatalf("the demo exited %d after Ctrl-C, want 0; stderr:\n%s", code, p.Stderr.String())
	}
	for _, dir := range []string{dataDir, filepath.Dir(dataDir)} {
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("the demo left %s behind (stat: %v)", dir, err)
		}
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Errorf("the demo left %d entries in its temporary directory, e.g. %s", len(left), left[0].Name())
	}
	if strings.Contains(p.Stderr.String(), "level=ERROR") {
		t.Errorf("the demo logged errors:\n%s", p.Stderr.String())
	}
}
