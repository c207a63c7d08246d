package testnet_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/sallyport/sallyport/internal/admin"
	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/edge"
)

// cookieBackend is an HTTP back-end that counts its requests and keeps the
// Cookie header of the last one.
type cookieBackend struct {
	addr     string
	requests atomic.Int64
	mu       sync.Mutex
	cookie   string
}

func (b *cookieBackend) lastCookie() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.cookie
}

func startCookieBackend(t *testing.T) *cookieBackend {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &cookieBackend{addr: l.Addr().String()}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.requests.Add(1)
		b.mu.Lock()
		b.cookie = strings.Join(r.Header.Values("Cookie"), "|")
		b.mu.Unlock()
		io.WriteString(w, "back-end: "+r.Host+r.URL.Path)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return b
}

// httpSessionEdge is an edge with an https listener (0) for edge.test and
// two services published by Host that require a session, app at app.test
// and wiki at wiki.test, and a client that reaches any host at that
// listener without following redirects or keeping cookies.
type httpSessionEdge struct {
	*listenerEdge
	admin     *admin.Client
	app, wiki *cookieBackend
	client    *http.Client
	port      string
}

func startHTTPSessionEdge(t *testing.T) *httpSessionEdge {
	t.Helper()
	cs := newCerts(t, "test http session CA")
	files, _, _ := cs.issue(t, "edge", false, "edge.test", "app.test", "wiki.test")
	e := startListenerEdge(t, []config.Listener{
		{Kind: config.KindHTTPS, EdgeHosts: []string{"edge.test"}, Certificates: []config.CertificateFiles{files}},
	}, map[string]config.EdgeService{
		"app":  {Hosts: []string{"app.test"}, Policy: config.Policy{RequireSession: true}},
		"wiki": {Hosts: []string{"wiki.test"}, Policy: config.Policy{RequireSession: true}},
	})
	se := &httpSessionEdge{listenerEdge: e, app: startCookieBackend(t), wiki: startCookieBackend(t)}
	e.connect(t, map[string]string{"app": se.app.addr, "wiki": se.wiki.addr}, nil)
	token, err := e.AdminToken()
	if err != nil {
		t.Fatal(err)
	}
	se.admin = &admin.Client{Addr: e.AdminAddr().String(), Token: token}
	https := e.addr(0)
	_, se.port, _ = net.SplitHostPort(https)
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: cs.pool},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, https)
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	se.client = &http.Client{Transport: tr, Timeout: 20 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return se
}

// get requests url with the cookies given and returns the response, its
// body read.
func (se *httpSessionEdge) get(t *testing.T, url string, cookies ...*http.Cookie) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cookies {
		req.AddCookie(c)
	}
	resp, err := se.client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

// use opens a session's link and returns the cookie it set.
func (se *httpSessionEdge) use(t *testing.T, s admin.Session) *http.Cookie {
	t.Helper()
	resp, body := se.get(t, s.URL)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" {
		t.Fatalf("link: %s, Location %q, %q; want 303 to /", resp.Status, resp.Header.Get("Location"), body)
	}
	cs := resp.Cookies()
	if len(cs) != 1 {
		t.Fatalf("link set %d cookies, want 1: %v", len(cs), resp.Header.Values("Set-Cookie"))
	}
	return cs[0]
}

// wantNeedsLink wants a 401 page saying a link is needed, and nothing
// carried to the back-end b.
func (se *httpSessionEdge) wantNeedsLink(t *testing.T, url string, b *cookieBackend, cookies ...*http.Cookie) {
	t.Helper()
	before := b.requests.Load()
	resp, body := se.get(t, url, cookies...)
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "link") || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET %s: %s %q; want 401 with a page that says a link is needed", url, resp.Status, body)
	}
	if n := b.requests.Load(); n != before {
		t.Fatalf("the back-end got %d requests; a request without a valid session reached it", n-before)
	}
}

func TestHTTPSessionCookie(t *testing.T) {
	se := startHTTPSessionEdge(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	app := "https://app.test:" + se.port + "/"
	wiki := "https://wiki.test:" + se.port + "/"

	se.wantNeedsLink(t, app, se.app)

	s := se.create(t, "app", "1m")
	if want := app + ".sallyport/s/" + s.Token; s.URL != want || s.Host != "app.test" || s.Subprotocol != "" {
		t.Fatalf("session: URL %q, host %q, subprotocol %q; want %q on app.test, no subprotocol", s.URL, s.Host, s.Subprotocol, want)
	}
	ck := se.use(t, s)
	raw := ck.Raw
	if ck.Name != "__Host-sallyport-session" || !ck.HttpOnly || !ck.Secure || ck.SameSite != http.SameSiteLaxMode ||
		ck.Path != "/" || ck.Domain != "" || strings.Contains(strings.ToLower(raw), "domain=") || ck.MaxAge <= 0 || ck.MaxAge > 60 {
		t.Fatalf("cookie %q: want __Host-sallyport-session, HttpOnly, Secure, SameSite=Lax, Path=/, no Domain, Max-Age up to 60", raw)
	}
	if strings.Contains(ck.Value, strings.Split(s.Token, ".")[2]) {
		t.Fatal("the cookie holds the link's secret")
	}
	if n := se.app.requests.Load(); n != 0 {
		t.Fatalf("the link reached the back-end (%d requests)", n)
	}

	// The cookie admits requests to app.test, and the back-end never sees it.
	resp, body := se.get(t, app+"page", ck, &http.Cookie{Name: "theme", Value: "dark"})
	if resp.StatusCode != http.StatusOK || body != "back-end: app.test:"+se.port+"/page" {
		t.Fatalf("GET with the cookie: %s %q", resp.Status, body)
	}
	if got := se.app.lastCookie(); got != "theme=dark" {
		t.Fatalf("the back-end saw Cookie %q, want the client's other cookie alone", got)
	}

	t.Run("second use", func(t *testing.T) {
		resp, body := se.get(t, s.URL)
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, edge.SessionUsed) || len(resp.Cookies()) != 0 {
			t.Fatalf("second use: %s %q, cookies %v; want 403 saying %q and no cookie", resp.Status, body, resp.Cookies(), edge.SessionUsed)
		}
	})
	t.Run("another host", func(t *testing.T) {
		se.wantNeedsLink(t, wiki, se.wiki, ck)
		// A link presented on another service's host is refused, and stays unused.
		s2 := se.create(t, "app", "1m")
		resp, body := se.get(t, wiki+".sallyport/s/"+s2.Token)
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, edge.SessionUnknown) || len(resp.Cookies()) != 0 {
			t.Fatalf("link on wiki.test: %s %q; want 403 saying %q", resp.Status, body, edge.SessionUnknown)
		}
		// Nor is it a WebSocket link on the edge's host.
		c, r, err := websocket.Dial(ctx, "wss://edge.test:"+se.port+"/s/"+s2.Token, &websocket.DialOptions{HTTPClient: &http.Client{Transport: se.client.Transport}})
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		if r != nil && r.Body != nil {
			r.Body.Close()
		}
		_, _, err = c.Read(ctx)
		c.CloseNow()
		var ce websocket.CloseError
		if !errors.As(err, &ce) || ce.Reason != edge.SessionUnknown {
			t.Fatalf("HTTP link as a WebSocket one: %v, want a close saying %q", err, edge.SessionUnknown)
		}
		ck2 := se.use(t, s2)
		if resp, _ := se.get(t, app, ck2); resp.StatusCode != http.StatusOK {
			t.Fatalf("the link after its misuse elsewhere: %s", resp.Status)
		}
	})
	t.Run("forged cookie", func(t *testing.T) {
		id, _, _ := strings.Cut(ck.Value, ".")
		for _, v := range []string{id + ".AAAAAAAAAAAAAAAAAAAAAAAAAA", "nope.nope", "garbage", id} {
			se.wantNeedsLink(t, app, se.app, &http.Cookie{Name: ck.Name, Value: v})
		}
	})
	t.Run("revoked", func(t *testing.T) {
		if _, err := se.admin.RevokeSession(ctx, s.ID); err != nil {
			t.Fatalf("revoke a used HTTP session: %v", err)
		}
		se.wantNeedsLink(t, app, se.app, ck)
		ss, err := se.admin.Sessions(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range ss {
			if x.ID == s.ID && x.State != "revoked" {
				t.Fatalf("session after revocation: %s, want revoked", x.State)
			}
		}
	})
	t.Run("expired", func(t *testing.T) {
		s := se.create(t, "app", "2s")
		ck := se.use(t, s)
		if ck.MaxAge <= 0 || ck.MaxAge > 2 {
			t.Fatalf("Max-Age %d for a 2s session", ck.MaxAge)
		}
		// Admitted until the session ends, then refused: poll (bounded)
		// rather than guess when.
		deadline := time.Now().Add(15 * time.Second)
		for admitted := true; admitted; {
			sent := time.Now()
			resp, _ := se.get(t, app, ck)
			switch resp.StatusCode {
			case http.StatusOK:
				if !sent.Before(s.ExpiresAt) {
					t.Fatalf("a cookie admitted a request at %s, after its session ended at %s", time.Now(), s.ExpiresAt)
				}
			case http.StatusUnauthorized:
				admitted = false
			default:
				t.Fatalf("GET with the cookie: %s", resp.Status)
			}
			if time.Now().After(deadline) {
				t.Fatal("the cookie still admits requests 15s after its session was created with a 2s ttl")
			}
			time.Sleep(50 * time.Millisecond)
		}
		if !time.Now().After(s.ExpiresAt.Add(-time.Second)) {
			t.Fatalf("the cookie was refused before its session ended (at %s)", s.ExpiresAt)
		}
	})
	wantAudit(t, se.admin, map[string]string{"session.use": "ok", "session.revoke": "ok"})
}

// create makes a session for service that lasts ttl.
func (se *httpSessionEdge) create(t *testing.T, service, ttl string) admin.Session {
	t.Helper()
	s, err := se.admin.CreateSession(context.Background(), admin.SessionRequest{Service: service, TTL: ttl})
	if err != nil {
		t.Fatalf("create session for %s: %v", service, err)
	}
	return s
}
