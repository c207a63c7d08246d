package testnet_test

// End-to-end tests of the edge's shared listeners (http, https, tls,
// socks5), WebSocket access, PROXY protocol and per-service policy, with
// real clients: the Go standard library, curl, a Go WebSocket client and
// headless Chromium.

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/sallyport/sallyport/internal/admin"
	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/connector"
	"github.com/sallyport/sallyport/internal/edge"
	"github.com/sallyport/sallyport/internal/logbuf"
	"github.com/sallyport/sallyport/internal/testnet"
)

// listenerEdge is a running edge configured with shared listeners.
type listenerEdge struct {
	*edge.Edge
	Logs *logbuf.Buffer
	// DataDir is the edge's data directory.
	DataDir string
	// Stop stops the edge (drain, then close) and returns Run's error; it
	// is idempotent and runs when the test ends.
	Stop func() error
}

func testLogger(logs *logbuf.Buffer, role string) *slog.Logger {
	w := io.Writer(logs)
	if os.Getenv("SALLYPORT_TEST_LOG") != "" {
		w = io.MultiWriter(logs, os.Stderr)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})).With("role", role)
}

// startListenerEdge starts an edge with listeners and services on loopback
// and stops it when the test ends; tune, if any, changes its config first.
func startListenerEdge(t *testing.T, listeners []config.Listener, services map[string]config.EdgeService, tune ...func(*config.Edge)) *listenerEdge {
	t.Helper()
	for i := range listeners {
		if listeners[i].Listen == "" {
			listeners[i].Listen = "127.0.0.1:0"
		}
	}
	cfg := config.Edge{
		DataDir:      filepath.Join(t.TempDir(), "edge"),
		Tunnel:       config.EdgeTunnel{Listen: "127.0.0.1:0", KeepaliveInterval: 200 * time.Millisecond, KeepaliveTimeout: time.Second},
		Admin:        config.Admin{Listen: "127.0.0.1:0"},
		DrainTimeout: 2 * time.Second,
		Listeners:    listeners,
		Services:     services,
	}
	for _, f := range tune {
		f(&cfg)
	}
	logs := &logbuf.Buffer{}
	e, err := edge.New(cfg, testLogger(logs, "edge"))
	if err != nil {
		t.Fatalf("edge.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop := func() error {
		once.Do(func() { cancel(); runErr = <-done })
		return runErr
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("edge Run: %v", err)
		}
	})
	select {
	case <-e.Ready():
	case err := <-done:
		done <- err
		t.Fatalf("edge did not start: %v\nlogs:\n%s", err, logs)
	case <-time.After(20 * time.Second):
		t.Fatal("edge did not start within 20s")
	}
	return &listenerEdge{Edge: e, Logs: logs, Stop: stop, DataDir: cfg.DataDir}
}

// addr is the address of listener i.
func (e *listenerEdge) addr(i int) string { return e.ListenerAddr(i).String() }

// keyfile writes an enrollment keyfile for a new connector named site,
// granted services.
func (e *listenerEdge) keyfile(t *testing.T, services ...string) string {
	t.Helper()
	return e.keyfileFor(t, "site", services...)
}

// keyfileFor writes an enrollment keyfile for a new connector called name,
// granted services.
func (e *listenerEdge) keyfileFor(t *testing.T, name string, services ...string) string {
	t.Helper()
	token, err := e.AdminToken()
	if err != nil {
		t.Fatal(err)
	}
	c := &admin.Client{Addr: e.AdminAddr().String(), Token: token}
	kf, err := c.CreateKeyfile(context.Background(), admin.TokenRequest{Name: name, TTL: "1h", Services: services})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), name+".keyfile")
	if err := os.WriteFile(path, kf, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// connect starts a connector offering backends (service → address, with
// the PROXY protocol version of proxy[service], if any) and waits until
// the edge routes every service; it returns the connector's log.
func (e *listenerEdge) connect(t *testing.T, backends map[string]string, proxy map[string]string) *logbuf.Buffer {
	t.Helper()
	return e.connectWaiting(t, backends, proxy, slices.Collect(maps.Keys(backends)))
}

// connectWaiting is connect, waiting for the services in wait only (the
// others the edge's config may not have yet).
func (e *listenerEdge) connectWaiting(t *testing.T, backends map[string]string, proxy map[string]string, wait []string) *logbuf.Buffer {
	t.Helper()
	cfg := testnet.ConnectorConfig(t, e.keyfile(t, slices.Collect(maps.Keys(backends))...), testnet.ConnectorOptions{Services: backends})
	for name, v := range proxy {
		s := cfg.Services[name]
		s.ProxyProtocol = v
		cfg.Services[name] = s
	}
	logs := &logbuf.Buffer{}
	c, err := connector.New(cfg, testLogger(logs, "connector"))
	if err != nil {
		t.Fatalf("connector.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	for _, name := range wait {
		e.waitRoutes(t, name, 1)
	}
	return logs
}

func (e *listenerEdge) waitRoutes(t *testing.T, service string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, s := range e.Status(context.Background()).Services {
			if s.Name == service && s.Tunnels == n {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("service %s: not routed by %d tunnels within 10s; logs:\n%s", service, n, e.Logs)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// refusals returns the edge's refusal counts, as the admin API shows them.
func (e *listenerEdge) refusals(t *testing.T) map[string]int64 {
	t.Helper()
	token, _ := e.AdminToken()
	st, err := (&admin.Client{Addr: e.AdminAddr().String(), Token: token}).Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st.Refusals
}

// wantRefusals fails the test unless the edge counts exactly want within
// 5s (a client may see its refusal before the edge has counted it).
func (e *listenerEdge) wantRefusals(t *testing.T, want map[string]int64) {
	t.Helper()
	same := func(got map[string]int64) bool {
		if len(got) != len(want) {
			return false
		}
		for r, n := range want {
			if got[r] != n {
				return false
			}
		}
		return true
	}
	got := e.refusals(t)
	for deadline := time.Now().Add(5 * time.Second); !same(got) && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		got = e.refusals(t)
	}
	for r, n := range want {
		if got[r] != n {
			t.Errorf("refusals[%s] = %d, want %d (all: %v)", r, got[r], n, got)
		}
	}
	for r, n := range got {
		if _, ok := want[r]; !ok {
			t.Errorf("unexpected refusals[%s] = %d", r, n)
		}
	}
}

// seen is what the HTTP back-end saw of a request.
type seen struct {
	Host, Path, XFF, XFProto, XFHost, Remote string
	// AddrHeaders are the client-address headers the back-end received.
	AddrHeaders []string
	Conn        int64
}

// addrHeaders lists the headers in h that claim a client address (those
// the edge strips by default, and X-Site-User, which a test strips).
func addrHeaders(h http.Header) []string {
	var out []string
	for _, k := range append(slices.Clone(config.ClientAddressHeaders), "X-Site-User") {
		if v := h.Get(k); v != "" {
			out = append(out, k+": "+v)
		}
	}
	return out
}

// httpBackend starts an HTTP back-end that answers every request with what
// it saw, as JSON, and echoes WebSocket messages at /ws-echo. It numbers
// its connections.
func httpBackend(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns atomic.Int64
	type connKey struct{}
	mux := http.NewServeMux()
	mux.HandleFunc("/ws-echo", func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		c.SetReadLimit(1 << 20)
		for {
			typ, b, err := c.Read(r.Context())
			if err != nil {
				return
			}
			if err := c.Write(r.Context(), typ, append([]byte("echo:"), b...)); err != nil {
				return
			}
		}
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(seen{
			Host: r.Host, Path: r.URL.Path, XFF: r.Header.Get("X-Forwarded-For"), XFProto: r.Header.Get("X-Forwarded-Proto"),
			XFHost: r.Header.Get("X-Forwarded-Host"), Remote: r.RemoteAddr, Conn: r.Context().Value(connKey{}).(int64),
			AddrHeaders: addrHeaders(r.Header),
		})
	})
	srv := &http.Server{Handler: mux, ConnContext: func(ctx context.Context, _ net.Conn) context.Context {
		return context.WithValue(ctx, connKey{}, conns.Add(1))
	}}
	var wg sync.WaitGroup
	wg.Go(func() { srv.Serve(l) })
	t.Cleanup(func() { srv.Close(); wg.Wait() })
	return l.Addr().String()
}

// get sends a GET for host to an http listener at addr with client and
// returns the status, body and what the back-end saw (if it answered).
func get(t *testing.T, client *http.Client, url, host string, hdr map[string]string) (int, string, seen) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s (Host %s): %v", url, host, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var s seen
	if resp.StatusCode == http.StatusOK && strings.HasPrefix(string(b), "{") {
		if err := json.Unmarshal(b, &s); err != nil {
			t.Fatalf("back-end answer %q: %v", b, err)
		}
	}
	return resp.StatusCode, string(b), s
}

// newHTTPClient returns a client that closes its idle connections when
// the test ends.
func newHTTPClient(t *testing.T, tc *tls.Config) *http.Client {
	tr := &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: tc != nil}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// curl runs curl with args and returns its output; it skips the test,
// loudly, when curl is not installed.
func curl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("SKIPPED: curl is not installed (apt-get install curl); this test needs a real curl client")
	}
	out, err := exec.Command("curl", append([]string{"-sS", "--max-time", "10"}, args...)...).CombinedOutput()
	return string(out), err
}

func TestHTTPRoutesByHost(t *testing.T) {
	backend := httpBackend(t)
	no := false
	e := startListenerEdge(t, []config.Listener{{Kind: config.KindHTTP}, {Kind: config.KindHTTP, ForwardedHeaders: &no, StripHeaders: []string{"X-Site-User"}}},
		map[string]config.EdgeService{
			"web":     {Hosts: []string{"web.test"}},
			"apps":    {Hosts: []string{"*.apps.test"}},
			"special": {Hosts: []string{"special.apps.test"}},
			"gone":    {Hosts: []string{"gone.test"}},
			"down":    {Hosts: []string{"down.test"}},
		})
	e.connect(t, map[string]string{"web": backend, "apps": backend, "special": backend, "down": testnet.Refusing(t)}, nil)
	url := "http://" + e.addr(0) + "/some/path"
	c := newHTTPClient(t, nil)

	status, _, s := get(t, c, url, "web.test", map[string]string{"X-Forwarded-For": "6.6.6.6",
		"X-Real-IP": "6.6.6.6", "True-Client-IP": "6.6.6.6", "CF-Connecting-IP": "6.6.6.6", "X-Site-User": "admin"})
	if status != 200 || s.Host != "web.test" || s.Path != "/some/path" {
		t.Fatalf("web.test: %d %+v", status, s)
	}
	if len(s.AddrHeaders) != 1 || s.AddrHeaders[0] != "X-Site-User: admin" {
		t.Errorf("the back-end received %q; want the client-address headers stripped (and X-Site-User, not on this listener's list, kept)", s.AddrHeaders)
	}
	if s.XFF != "127.0.0.1" || s.XFProto != "http" || s.XFHost != "web.test" {
		t.Errorf("forwarded headers: for %q proto %q host %q; want 127.0.0.1 (the client's spoofed one dropped), http, web.test", s.XFF, s.XFProto, s.XFHost)
	}
	for host, want := range map[string]int{"a.apps.test": 200, "SPECIAL.apps.test.": 200, "a.b.apps.test": 404, "apps.test": 404, "nowhere.test": 404} {
		status, body, _ := get(t, c, url, host, nil)
		if status != want {
			t.Errorf("Host %s: status %d, want %d (%s)", host, status, want, body)
		}
		if want == 404 && body != fmt.Sprintf("sallyport: no service is published at host %q\n", strings.TrimSuffix(strings.ToLower(host), ".")) {
			t.Errorf("Host %s: 404 body %q", host, body)
		}
	}
	// A service that no connector offers fails at once with a clear 503.
	status, body, _ := get(t, c, url, "gone.test", nil)
	if status != http.StatusServiceUnavailable || !strings.Contains(body, "no connector offers service gone") {
		t.Errorf("gone.test: %d %q, want 503 naming the missing connector", status, body)
	}

	// A back-end that the connector cannot reach: 502 with the reason.
	status, body, _ = get(t, c, url, "down.test", nil)
	if status != http.StatusBadGateway || body != "sallyport: service \"down\": back-end unreachable\n" {
		t.Errorf("down.test: %d %q, want 502 saying the back-end is unreachable", status, body)
	}

	// Keep-alive: one client connection's requests share one back-end
	// connection; another client gets its own.
	_, _, s1 := get(t, c, url, "web.test", nil)
	_, _, s2 := get(t, c, url, "web.test", nil)
	_, _, s3 := get(t, newHTTPClient(t, nil), url, "web.test", nil)
	if s1.Conn != s2.Conn || s3.Conn == s1.Conn {
		t.Errorf("back-end connections %d, %d (same client), %d (another); want the first two equal, the third new", s1.Conn, s2.Conn, s3.Conn)
	}

	// forwarded_headers: false sets none and still drops the client's;
	// strip_headers drops more.
	_, _, s = get(t, c, "http://"+e.addr(1)+"/", "web.test", map[string]string{"X-Forwarded-For": "6.6.6.6", "X-Real-IP": "6.6.6.6", "X-Site-User": "admin"})
	if s.XFF != "" || s.XFProto != "" || s.XFHost != "" || len(s.AddrHeaders) != 0 {
		t.Errorf("forwarded_headers false, strip_headers [X-Site-User]: back-end saw %+v", s)
	}

	out, err := curl(t, "-H", "Host: a.apps.test", "http://"+e.addr(0)+"/curl")
	if err != nil || !strings.Contains(out, `"Path":"/curl"`) {
		t.Errorf("curl: %v: %s", err, out)
	}
	out, _ = curl(t, "-H", "Host: nowhere.test", "http://"+e.addr(0)+"/")
	if !strings.Contains(out, "no service is published at host") {
		t.Errorf("curl to an unknown host: %s", out)
	}
	e.wantRefusals(t, map[string]int64{"unknown_host": 4, "no_connector": 1, "connector": 1})
}

func TestHTTPPassesWebSocketUpgrades(t *testing.T) {
	backend := httpBackend(t)
	e := startListenerEdge(t, []config.Listener{{Kind: config.KindHTTP}}, map[string]config.EdgeService{"web": {Hosts: []string{"web.test"}}})
	e.connect(t, map[string]string{"web": backend}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws://"+e.addr(0)+"/ws-echo", &websocket.DialOptions{Host: "web.test"})
	if err != nil {
		t.Fatalf("dial the back-end's WebSocket through the edge: %v", err)
	}
	defer c.CloseNow()
	c.SetReadLimit(1 << 20)
	for _, msg := range []string{"one", strings.Repeat("x", 100<<10)} {
		if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		_, b, err := c.Read(ctx)
		if err != nil || string(b) != "echo:"+msg {
			t.Fatalf("echo of %d bytes: %d bytes, %v", len(msg), len(b), err)
		}
	}
	c.Close(websocket.StatusNormalClosure, "")
}

func TestHTTPListenerRefusesOtherProtocols(t *testing.T) {
	e := startListenerEdge(t, []config.Listener{{Kind: config.KindHTTP}}, map[string]config.EdgeService{"web": {Hosts: []string{"web.test"}}})
	for _, first := range []string{"SSH-2.0-OpenSSH_9.2\r\n", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", "get / HTTP/1.1\r\n\r\n"} {
		c, err := net.Dial("tcp", e.addr(0))
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte(first))
		got, err := closedWithin(c)
		c.Close()
		if err != nil || len(got) != 0 {
			t.Errorf("after %q: read %q, %v; want the connection closed without an answer", first, got, err)
		}
	}
	e.Logs.WaitFor(t, 5*time.Second, 1, "client refused: not an HTTP request")
	e.wantRefusals(t, map[string]int64{"not_http": 3})
}

func TestHTTPS(t *testing.T) {
	backend := httpBackend(t)
	cs := newCerts(t, "test web CA")
	webFiles, webSerial, _ := cs.issue(t, "web", false, "web.test")
	otherFiles, otherSerial, _ := cs.issue(t, "other", false, "other.test", "*.apps.test")
	e := startListenerEdge(t, []config.Listener{{Kind: config.KindHTTPS, Certificates: []config.CertificateFiles{webFiles, otherFiles}}},
		map[string]config.EdgeService{"web": {Hosts: []string{"web.test"}}, "apps": {Hosts: []string{"*.apps.test"}}})
	e.connect(t, map[string]string{"web": backend, "apps": backend}, nil)
	addr := e.addr(0)
	_, port, _ := net.SplitHostPort(addr)

	// The certificate is chosen by SNI.
	if got := servedSerial(t, addr, "web.test", cs.pool); got != webSerial {
		t.Errorf("web.test served certificate %d, want %d", got, webSerial)
	}
	if got := servedSerial(t, addr, "x.apps.test", cs.pool); got != otherSerial {
		t.Errorf("x.apps.test served certificate %d, want %d", got, otherSerial)
	}

	// Go's client, over HTTP/2, sees X-Forwarded-Proto https.
	c := newHTTPClient(t, &tls.Config{RootCAs: cs.pool, ServerName: "x.apps.test"})
	status, _, s := get(t, c, "https://"+addr+"/p", "x.apps.test", nil)
	if status != 200 || s.XFProto != "https" || s.Host != "x.apps.test" {
		t.Errorf("https GET: %d %+v", status, s)
	}

	out, err := curl(t, "--cacert", cs.caFile, "--resolve", "web.test:"+port+":127.0.0.1", "https://web.test:"+port+"/curl")
	if err != nil || !strings.Contains(out, `"XFProto":"https"`) {
		t.Errorf("curl https: %v: %s", err, out)
	}

	// New files are picked up: the next handshakes get the new certificate.
	_, newSerial, _ := cs.issue(t, "web", false, "web.test")
	deadline := time.Now().Add(10 * time.Second)
	for servedSerial(t, addr, "web.test", cs.pool) != newSerial {
		if time.Now().After(deadline) {
			t.Fatalf("the renewed certificate was not served within 10s; logs:\n%s", e.Logs)
		}
		time.Sleep(100 * time.Millisecond)
	}
	e.Logs.WaitFor(t, time.Second, 1, "https certificate reloaded")

	// Plain HTTP on the https port is refused.
	out, _ = curl(t, "-H", "Host: web.test", "http://"+addr+"/")
	if strings.Contains(out, "XFProto") {
		t.Errorf("plain HTTP reached the back-end through the https listener: %s", out)
	}
	e.Logs.WaitFor(t, 5*time.Second, 1, "client refused: not a TLS handshake")
	e.wantRefusals(t, map[string]int64{"not_tls": 1})
}

func TestHTTPSClientCertificates(t *testing.T) {
	backend := httpBackend(t)
	cs := newCerts(t, "test web CA")
	staff := newCerts(t, "staff CA")
	strangers := newCerts(t, "strangers CA")
	webFiles, _, _ := cs.issue(t, "web", false, "web.test", "console.test")
	_, _, alice := staff.issue(t, "alice", true, "alice")
	_, _, mallory := strangers.issue(t, "mallory", true, "mallory")
	e := startListenerEdge(t, []config.Listener{
		{Kind: config.KindHTTPS, Certificates: []config.CertificateFiles{webFiles}},
		{Kind: config.KindHTTPS, Certificates: []config.CertificateFiles{webFiles}, ClientCA: staff.caFile},
	}, map[string]config.EdgeService{
		"web":     {Hosts: []string{"web.test"}},
		"console": {Hosts: []string{"console.test"}, Policy: config.Policy{ClientCA: staff.caFile}},
	})
	e.connect(t, map[string]string{"web": backend, "console": backend}, nil)
	client := func(cert *tls.Certificate) *http.Client {
		tc := &tls.Config{RootCAs: cs.pool, ServerName: "console.test"}
		if cert != nil {
			tc.Certificates = []tls.Certificate{*cert}
		}
		return newHTTPClient(t, tc)
	}
	// A service's client_ca: checked per request.
	url := "https://" + e.addr(0) + "/"
	for _, tt := range []struct {
		name   string
		cert   *tls.Certificate
		host   string
		status int
	}{
		{"staff certificate", &alice, "console.test", 200},
		{"no certificate", nil, "console.test", 403},
		{"stranger's certificate", &mallory, "console.test", 403},
		{"open service without certificate", nil, "web.test", 200},
	} {
		status, body, _ := get(t, client(tt.cert), url, tt.host, nil)
		if status != tt.status {
			t.Errorf("%s: status %d, want %d (%s)", tt.name, status, tt.status, body)
		}
		if status == 403 && !strings.Contains(body, "needs a client certificate from its CA") {
			t.Errorf("%s: 403 body %q does not say why", tt.name, body)
		}
	}
	// A listener's client_ca: checked at the handshake, for every host.
	url = "https://" + e.addr(1) + "/"
	if status, _, _ := get(t, client(&alice), url, "web.test", nil); status != 200 {
		t.Errorf("listener client_ca with the staff certificate: %d", status)
	}
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Host = "web.test"
	if resp, err := client(&mallory).Do(req); err == nil {
		resp.Body.Close()
		t.Errorf("listener client_ca let a stranger's certificate in: %s", resp.Status)
	}
	e.Logs.WaitFor(t, 5*time.Second, 1, "the https listener needs a client certificate from its CA")
	e.wantRefusals(t, map[string]int64{"client_cert": 3})
}
