package testnet_test

import (
	"encoding/base64"
	"html"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/admin"
	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/store"
	"github.com/sallyport/sallyport/internal/testnet"
)

// ui is a browser's view of an edge's dashboard, over plain HTTP: it
// sends the headers a browser would (Origin, Sec-Fetch-Site), follows no
// redirect, and keeps one session cookie.
type ui struct {
	t      *testing.T
	base   string // http://ADDR
	cookie *http.Cookie
	csrf   string
}

func newUI(t *testing.T, e interface{ AdminAddr() net.Addr }) *ui {
	return &ui{t: t, base: "http://" + e.AdminAddr().String()}
}

// do sends a request, with the session cookie if any and the headers
// given (name, value pairs), and returns the response with its body read.
func (u *ui) do(method, path string, form url.Values, headers ...string) (*http.Response, string) {
	u.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequestWithContext(u.t.Context(), method, u.base+path, body)
	if err != nil {
		u.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if u.cookie != nil {
		req.AddCookie(u.cookie)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	hc := &http.Client{Timeout: 20 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := hc.Do(req)
	if err != nil {
		u.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// post sends a form as the dashboard's own page would: same origin.
func (u *ui) post(path string, form url.Values, headers ...string) (*http.Response, string) {
	u.t.Helper()
	return u.do(http.MethodPost, path, form, append([]string{"Origin", u.base, "Sec-Fetch-Site", "same-origin"}, headers...)...)
}

var csrfField = regexp.MustCompile(`name="csrf" value="([0-9a-f]{64})"`)

// login logs in with token and keeps the session's cookie and CSRF token.
func (u *ui) login(token string) {
	u.t.Helper()
	resp, body := u.post("/ui/login", url.Values{"token": {token}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/" {
		u.t.Fatalf("login: %s to %q: %s", resp.Status, resp.Header.Get("Location"), body)
	}
	for _, c := range resp.Cookies() {
		if c.Name == "sallyport_ui" {
			u.cookie = c
		}
	}
	if u.cookie == nil {
		u.t.Fatalf("login set no session cookie: %v", resp.Header["Set-Cookie"])
	}
	resp, body = u.do(http.MethodGet, "/ui/", nil)
	m := csrfField.FindStringSubmatch(body)
	if resp.StatusCode != http.StatusOK || m == nil {
		u.t.Fatalf("the overview after login: %s, CSRF token found: %v", resp.Status, m != nil)
	}
	u.csrf = m[1]
}

// revoked reports whether connector name is revoked, as the API says.
func revoked(t *testing.T, ac *admin.Client, name string) bool {
	t.Helper()
	cs, err := ac.Connectors(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		if c.Name == name {
			return !c.RevokedAt.IsZero()
		}
	}
	t.Fatalf("connector %s not listed", name)
	return false
}

// The dashboard's trust rules, each played by an attacker: no page
// without a session, a wrong token gets an error and no cookie, logins
// and actions from another origin are refused, an action needs its own
// session's CSRF token, the session cookie opens no API call and the API
// still takes its bearer token; nothing refused changes anything, every
// refusal is audited, and the token never appears in a page.
func TestDashboardTrustRules(t *testing.T) {
	echo := testnet.Echo(t)
	e, c := setup(t, map[string]string{"echo": echo.Addr()})
	ac := e.AdminClient(t)
	token := ac.Token

	stranger := newUI(t, e)
	resp, _ := stranger.do(http.MethodGet, "/ui/", nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/login" {
		t.Fatalf("the overview without a session: %s to %q, want 303 to /ui/login", resp.Status, resp.Header.Get("Location"))
	}
	stranger.cookie = &http.Cookie{Name: "sallyport_ui", Value: strings.Repeat("ab", 32)}
	if resp, _ := stranger.do(http.MethodGet, "/ui/manage", nil); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("a made-up session cookie: %s, want 303 to the login", resp.Status)
	}
	stranger.cookie = nil
	resp, body := stranger.do(http.MethodGet, "/ui/login", nil)
	for h, want := range map[string]string{
		"Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
		"X-Frame-Options":         "DENY", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
	} {
		if got := resp.Header.Get(h); got != want {
			t.Errorf("login page %s: %q, want %q", h, got, want)
		}
	}
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `name="token"`) || strings.Contains(body, "<script") {
		t.Fatalf("login page: %s\n%s", resp.Status, body)
	}

	// Logins: a wrong token, and the right one from another site (login
	// CSRF) or with no origin at all, get no cookie.
	for _, tc := range []struct {
		name    string
		token   string
		headers []string
		status  int
		says    string
	}{
		{"wrong token", "0123", []string{"Origin", stranger.base}, http.StatusUnauthorized, "Wrong token"},
		{"other origin", token, []string{"Origin", "http://evil.example"}, http.StatusForbidden, "another origin"},
		{"other site", token, []string{"Sec-Fetch-Site", "cross-site"}, http.StatusForbidden, "another site"},
		{"no origin", token, nil, http.StatusForbidden, "neither an Origin nor a Sec-Fetch-Site"},
	} {
		resp, body := stranger.do(http.MethodPost, "/ui/login", url.Values{"token": {tc.token}}, tc.headers...)
		if resp.StatusCode != tc.status || !strings.Contains(body, tc.says) || len(resp.Cookies()) != 0 {
			t.Errorf("login with %s: %s, cookies %v, want %d saying %q; page:\n%s", tc.name, resp.Status, resp.Cookies(), tc.status, tc.says, body)
		}
	}

	a, b := newUI(t, e), newUI(t, e)
	a.login(token)
	b.login(token)
	if a.cookie.Value == b.cookie.Value || a.csrf == b.csrf {
		t.Fatal("two logins share a session id or CSRF token")
	}
	if ck := a.cookie; !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Path != "/ui" || ck.Secure || len(ck.Value) != 64 {
		t.Errorf("session cookie %+v: want HttpOnly, SameSite=Strict, Path=/ui, 256 bits, not Secure over plain http", ck)
	}

	// Revocations that must not happen.
	forged := []struct {
		name    string
		u       *ui
		form    url.Values
		headers []string
		says    string
	}{
		{"no CSRF token", a, url.Values{"connector": {"site-a"}}, nil, "CSRF token"},
		{"another session's CSRF token", a, url.Values{"connector": {"site-a"}, "csrf": {b.csrf}}, nil, "CSRF token"},
		{"another origin", a, url.Values{"connector": {"site-a"}, "csrf": {a.csrf}}, []string{"Origin", "http://evil.example", "Sec-Fetch-Site", "cross-site"}, "another site"},
		{"another origin, no fetch metadata", a, url.Values{"connector": {"site-a"}, "csrf": {a.csrf}}, []string{"Origin", "http://evil.example", "Sec-Fetch-Site", ""}, "another origin"},
		{"no cookie", stranger, url.Values{"connector": {"site-a"}, "csrf": {a.csrf}}, nil, "not logged in"},
	}
	for _, f := range forged {
		resp, body := f.u.post("/ui/revoke", f.form, f.headers...)
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, f.says) {
			t.Errorf("revoke with %s: %s %q, want 403 saying %q", f.name, resp.Status, body, f.says)
		}
	}
	resp, body = a.do(http.MethodPost, "/ui/revoke", url.Values{"connector": {"site-a"}, "csrf": {a.csrf}})
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "neither an Origin nor a Sec-Fetch-Site") {
		t.Errorf("revoke without Origin or Sec-Fetch-Site: %s %q, want 403", resp.Status, body)
	}
	if resp, _ := a.do(http.MethodGet, "/ui/revoke?connector=site-a&csrf="+a.csrf, nil); resp.StatusCode == http.StatusSeeOther || resp.StatusCode == http.StatusOK {
		t.Errorf("GET /ui/revoke: %s, want a refusal", resp.Status)
	}
	if revoked(t, ac, "site-a") || c.Tunnels() != 1 {
		t.Fatalf("a refused request revoked the connector (tunnels: %d)", c.Tunnels())
	}

	// The session cookie is no credential for the API, which still takes
	// its bearer token without one.
	apiWith := func(bearer string, ck *http.Cookie) int {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, a.base+"/v1/connectors/site-b/revoke", nil)
		if ck != nil {
			req.AddCookie(ck)
		}
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if s := apiWith("", a.cookie); s != http.StatusUnauthorized {
		t.Errorf("the API with the session cookie and no bearer token: %d, want 401", s)
	}
	if _, err := ac.Connectors(t.Context()); err != nil {
		t.Errorf("the API with its bearer token: %v", err)
	}

	// The real thing: revoked, said on the page it lands on, audited.
	resp, _ = a.post("/ui/revoke", url.Values{"connector": {"site-a"}, "csrf": {a.csrf}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/" {
		t.Fatalf("revoke: %s to %q", resp.Status, resp.Header.Get("Location"))
	}
	if !revoked(t, ac, "site-a") {
		t.Fatal("the dashboard's revoke did not revoke")
	}
	_, body = a.do(http.MethodGet, "/ui/", nil)
	if !strings.Contains(body, "is revoked: its tunnels are closed") {
		t.Errorf("the overview after a revoke does not say so:\n%s", body)
	}
	_, manage := a.do(http.MethodGet, "/ui/manage", nil)
	for _, page := range []string{body, manage} {
		if strings.Contains(page, token) {
			t.Fatal("a dashboard page shows the admin token")
		}
	}
	events := map[string]int{}
	err := ac.Audit(t.Context(), time.Time{}, false, func(ev store.AuditEvent) error {
		if strings.HasPrefix(ev.Actor, "admin via dashboard from ") {
			events[ev.Action+" "+ev.Subject+" "+ev.Result]++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for ev, n := range map[string]int{
		"admin.call POST /ui/login refused: HTTP 401":  1,
		"admin.call POST /ui/login refused: HTTP 403":  3,
		"admin.call POST /ui/login ok":                 2,
		"admin.call POST /ui/revoke refused: HTTP 403": 6,
		"admin.call POST /ui/revoke ok":                1,
	} {
		if events[ev] != n {
			t.Errorf("audit: %d × %q, want %d (the dashboard's events: %v)", events[ev], ev, n, events)
		}
	}
	if !strings.Contains(manage, "POST /ui/revoke") {
		t.Errorf("the manage page's audit trail does not show the revoke:\n%s", manage)
	}

	// Logout ends the session: its cookie opens nothing any more.
	if resp, _ := a.post("/ui/logout", url.Values{"csrf": {a.csrf}}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("logout: %s", resp.Status)
	}
	if resp, _ := a.do(http.MethodGet, "/ui/", nil); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("the overview after logout: %s, want 303 to the login", resp.Status)
	}
	if resp, _ := b.do(http.MethodGet, "/ui/", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("another session after a logout: %s, want it still open", resp.Status)
	}
}

// Guessing the token is slow: failures from one address are answered ever
// later, and failed logins answered in parallel are few, the rest refused
// unchecked; the right token still works afterwards.
func TestDashboardLoginBackoff(t *testing.T) {
	e := testnet.StartEdge(t, testnet.EdgeOptions{})
	u := newUI(t, e)
	for range 4 { // 100+200+400+800 ms
		if resp, _ := u.post("/ui/login", url.Values{"token": {"guess"}}); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("a wrong token: %s", resp.Status)
		}
	}
	start := time.Now()
	u.post("/ui/login", url.Values{"token": {"guess"}})
	if waited := time.Since(start); waited < 1600*time.Millisecond {
		t.Fatalf("the fifth failure in a row was answered after %s, want at least 1.6s", waited)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	statuses := map[int]int{}
	for range 16 {
		wg.Go(func() {
			resp, _ := u.post("/ui/login", url.Values{"token": {"guess"}})
			mu.Lock()
			statuses[resp.StatusCode]++
			mu.Unlock()
		})
	}
	wg.Wait()
	if statuses[http.StatusTooManyRequests] == 0 || statuses[http.StatusUnauthorized] > 8 || statuses[http.StatusOK]+statuses[http.StatusSeeOther] > 0 {
		t.Fatalf("16 guesses at once: %v, want at most 8 checked (401), the rest 429", statuses)
	}
	token, err := e.AdminToken()
	if err != nil {
		t.Fatal(err)
	}
	u.login(token)
}

// Every live client connection is listed with its bytes so far, and none
// is left once they close: the registry does not leak.
func TestLiveConnectionsListedThenGone(t *testing.T) {
	echo := testnet.Echo(t)
	e, _ := setup(t, map[string]string{"echo": echo.Addr()})
	const n = 20
	msg := []byte(strings.Repeat("x", 1000))
	var conns []io.ReadWriteCloser
	for range n {
		c := e.Dial(t, "echo")
		c.SetDeadline(time.Now().Add(20 * time.Second))
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, make([]byte, len(msg))); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	eventually(t, 10*time.Second, "20 live connections with 1000 bytes each way", func() bool {
		live := e.Live()
		if len(live) != n {
			return false
		}
		for _, l := range live {
			if l.Service != "echo" || l.Connector != "site-a" || l.BytesIn != 1000 || l.BytesOut != 1000 || l.Via != "tcp" || l.Since.IsZero() {
				return false
			}
		}
		return true
	})
	for _, c := range conns {
		c.Close()
	}
	eventually(t, 10*time.Second, "no live connection after they closed", func() bool { return len(e.Live()) == 0 })
}

var (
	shownSecret   = regexp.MustCompile(`(?s)<textarea id="secret"[^>]*>(.*?)</textarea>`)
	shownDownload = regexp.MustCompile(`href="data:application/json;base64,([A-Za-z0-9+/=]+)" download="([^"]+)"`)
	shownFlash    = regexp.MustCompile(`<p id="flash" class="([^"]*)"[^>]*>([^<]*)</p>`)
)

// flashOn returns the message the page at path shows, and whether it is a
// refusal.
func (u *ui) flashOn(path string) (string, bool) {
	u.t.Helper()
	_, body := u.do(http.MethodGet, path, nil)
	m := shownFlash.FindStringSubmatch(body)
	if m == nil {
		return "", false
	}
	return html.UnescapeString(m[2]), strings.Contains(m[1], "bad")
}

// The dashboard's actions do what the API's do: a keyfile it shows once
// (to copy or save) enrolls a real connector; grants and ungrants change
// the connector's grants; a session link it shows once is listed as
// unused; what the edge refuses is said on the page and changes nothing.
func TestDashboardActions(t *testing.T) {
	echo := testnet.Echo(t)
	e := startListenerEdge(t, []config.Listener{{Kind: config.KindHTTP, EdgeHosts: []string{"edge.test"}}},
		map[string]config.EdgeService{"echo": {Listen: "127.0.0.1:0"}})
	e.connect(t, map[string]string{"echo": echo.Addr()}, nil)
	token, err := e.AdminToken()
	if err != nil {
		t.Fatal(err)
	}
	ac := &admin.Client{Addr: e.AdminAddr().String(), Token: token}
	u := newUI(t, e)
	u.login(token)

	resp, body := u.post("/ui/keyfile", url.Values{"csrf": {u.csrf}, "name": {"site-b"}, "services": {"echo, logs"}, "ttl": {"10m"}})
	shown, dl := shownSecret.FindStringSubmatch(body), shownDownload.FindStringSubmatch(body)
	if resp.StatusCode != http.StatusCreated || shown == nil || dl == nil {
		t.Fatalf("create a keyfile: %s\n%s", resp.Status, body)
	}
	kf := html.UnescapeString(shown[1])
	saved, err := base64.StdEncoding.DecodeString(dl[1])
	if err != nil || string(saved) != kf || dl[2] != "site-b.keyfile" {
		t.Fatalf("the keyfile to save (%s, %v) is not the one shown", dl[2], err)
	}
	path := filepath.Join(t.TempDir(), "site-b.keyfile")
	if err := os.WriteFile(path, saved, 0o600); err != nil {
		t.Fatal(err)
	}
	testnet.StartConnector(t, path, testnet.ConnectorOptions{Services: map[string]string{"echo": echo.Addr()}}).WaitTunnels(t, 1)
	if _, manage := u.do(http.MethodGet, "/ui/manage", nil); strings.Contains(manage, kf) || strings.Contains(manage, dl[1]) {
		t.Fatal("the manage page shows the keyfile again")
	}

	grants := func() string {
		t.Helper()
		cs, err := ac.Connectors(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cs {
			if c.Name == "site-b" {
				return strings.Join(c.Grants, ",")
			}
		}
		t.Fatal("site-b is not enrolled")
		return ""
	}
	for _, step := range []struct {
		op, service, grants, says string
		refused                   bool
	}{
		{"ungrant", "logs", "echo", "Connector site-b may no longer offer service logs.", false},
		{"grant", "db", "db,echo", "Connector site-b may now offer service db.", false},
		{"grant", "bad name!", "db,echo", `Refused: bad service name "bad name!"`, true},
	} {
		resp, _ := u.post("/ui/grant", url.Values{"csrf": {u.csrf}, "connector": {"site-b"}, "service": {step.service}, "op": {step.op}})
		if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/manage" {
			t.Fatalf("%s %s: %s to %q", step.op, step.service, resp.Status, resp.Header.Get("Location"))
		}
		if msg, bad := u.flashOn("/ui/manage"); !strings.HasPrefix(msg, step.says) || bad != step.refused {
			t.Errorf("%s %s: the page says %q (refusal: %v), want %q", step.op, step.service, msg, bad, step.says)
		}
		if g := grants(); g != step.grants {
			t.Errorf("%s %s: grants %s, want %s", step.op, step.service, g, step.grants)
		}
	}

	resp, body = u.post("/ui/session", url.Values{"csrf": {u.csrf}, "service": {"echo"}, "ttl": {"2m"}})
	shown = shownSecret.FindStringSubmatch(body)
	if resp.StatusCode != http.StatusCreated || shown == nil || !strings.HasPrefix(shown[1], "ws://edge.test:") || !strings.Contains(body, "/.sallyport/view#") {
		t.Fatalf("create a session: %s\n%s", resp.Status, body)
	}
	ss, err := ac.Sessions(t.Context())
	if err != nil || len(ss) != 1 || ss[0].Service != "echo" || ss[0].State != "unused" {
		t.Fatalf("sessions after the dashboard made one: %+v, %v", ss, err)
	}
	if _, manage := u.do(http.MethodGet, "/ui/manage", nil); !strings.Contains(manage, ss[0].ID) || strings.Contains(manage, shown[1]) {
		t.Error("the manage page does not list the session, or shows its link again")
	}
	u.post("/ui/session", url.Values{"csrf": {u.csrf}, "service": {"nope"}})
	if msg, bad := u.flashOn("/ui/manage"); !bad || !strings.Contains(msg, `no service named "nope"`) {
		t.Errorf("a session for an unknown service: the page says %q", msg)
	}
	if ss, _ := ac.Sessions(t.Context()); len(ss) != 1 {
		t.Errorf("a refused session request left %d sessions", len(ss))
	}
}

// Refused clients are listed newest first with their reason, service and
// address, on the overview too, and a flood keeps only the last 100; the
// services table shows each service's ways in and policy.
func TestRecentRefusalsListed(t *testing.T) {
	e := testnet.StartEdge(t, testnet.EdgeOptions{Expose: map[string]string{"db": ""}, Tune: func(c *config.Edge) {
		c.Listeners = []config.Listener{{Kind: config.KindHTTP, Listen: "127.0.0.1:0"}, {Kind: config.KindTLS, Listen: "127.0.0.1:0"}}
		c.Services["web"] = config.EdgeService{Listen: "127.0.0.1:0", Hosts: []string{"web.test"}, SNI: []string{"web.tls.test"},
			Policy: config.Policy{Deny: []string{"127.0.0.0/8"}, MaxConnections: 7}}
	}})
	read := func(service string) *net.TCPConn {
		c := e.Dial(t, service)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatalf("a client of %s was let in", service)
		}
		return c
	}
	denied := read("web")
	refused := read("db") // no connector offers it
	eventually(t, 10*time.Second, "two refusals listed", func() bool { return len(e.RecentRefusals()) == 2 })
	got := e.RecentRefusals()
	if r := got[0]; r.Reason != "no_connector" || r.Service != "db" || r.Client != refused.LocalAddr().String() || r.Via != "tcp" || r.Time.IsZero() {
		t.Errorf("the newest refusal: %+v, want db's no_connector from %s", r, refused.LocalAddr())
	}
	if r := got[1]; r.Reason != "address_denied" || r.Service != "web" || r.Client != denied.LocalAddr().String() || r.Message == "" {
		t.Errorf("the older refusal: %+v, want web's address_denied from %s", r, denied.LocalAddr())
	}
	token, err := e.AdminToken()
	if err != nil {
		t.Fatal(err)
	}
	u := newUI(t, e)
	u.login(token)
	_, page := u.do(http.MethodGet, "/ui/", nil)
	for _, want := range []string{"address_denied", html.EscapeString(denied.LocalAddr().String()), "web.test", "web.tls.test", "deny 127.0.0.0/8; at most 7 at once;"} {
		if !strings.Contains(page, want) {
			t.Errorf("the overview does not show %q", want)
		}
	}
	for range 150 {
		read("db").Close()
	}
	if got := e.RecentRefusals(); len(got) != 100 || got[99].Reason != "no_connector" {
		t.Errorf("after 152 refusals %d are listed (the oldest %+v), want the last 100", len(got), got[len(got)-1])
	}
}
