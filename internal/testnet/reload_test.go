package testnet_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/sallyport/sallyport/internal/admin"
	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/testnet"
	"github.com/sallyport/sallyport/internal/tunnel"
	"github.com/sallyport/sallyport/internal/wire"
	"golang.org/x/net/proxy"
)

// reloadable starts an edge like startListenerEdge and returns it with
// the config it started with; set makes Reload read next() from then on
// (defaults applied and validated, as the CLI's loader does).
func reloadable(t *testing.T, listeners []config.Listener, services map[string]config.EdgeService) (*listenerEdge, config.Edge) {
	t.Helper()
	var base config.Edge
	e := startListenerEdge(t, listeners, services, func(c *config.Edge) { base = *c })
	base.ApplyDefaults()
	return e, base
}

// loadWith makes e's Reload read next, defaults applied and validated.
func loadWith(e *listenerEdge, next func() config.Edge) {
	e.LoadConfigWith(func() (config.Edge, error) {
		c := next()
		c.ApplyDefaults()
		return c, c.Validate()
	})
}

// httpOn sends a GET for host on a kept-alive HTTP/1.1 connection and
// returns the status.
func httpOn(t *testing.T, c net.Conn, br *bufio.Reader, host string) int {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(c, "GET /x HTTP/1.1\r\nHost: %s\r\n\r\n", host); err != nil {
		t.Fatalf("request on the live connection: %v", err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("response on the live connection: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// A reload that names new certificate files serves them to the next TLS
// handshake at once; a TLS connection made before it goes on with its
// own, serving requests.
func TestReloadServesNewCertificate(t *testing.T) {
	backend := httpBackend(t)
	cs := newCerts(t, "test web CA")
	oldFiles, oldSerial, _ := cs.issue(t, "web-old", false, "web.test")
	newFiles, newSerial, _ := cs.issue(t, "web-new", false, "web.test")
	e, base := reloadable(t, []config.Listener{{Kind: config.KindHTTPS, Certificates: []config.CertificateFiles{oldFiles}}},
		map[string]config.EdgeService{"web": {Hosts: []string{"web.test"}}})
	e.connect(t, map[string]string{"web": backend}, nil)
	addr := e.addr(0)

	live, err := tls.Dial("tcp", addr, &tls.Config{ServerName: "web.test", RootCAs: cs.pool, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	br := bufio.NewReader(live)
	if got := httpOn(t, live, br, "web.test"); got != 200 {
		t.Fatalf("before the reload: status %d", got)
	}

	loadWith(e, func() config.Edge {
		next := base
		next.Listeners = []config.Listener{{Kind: config.KindHTTPS, Listen: base.Listeners[0].Listen, Certificates: []config.CertificateFiles{newFiles}}}
		return next
	})
	res, err := e.Reload(context.Background())
	if err != nil {
		t.Fatalf("reload: %v", err)
	}
	if !res.Changed || len(res.ListenersAdded)+len(res.ListenersRemoved) != 0 {
		t.Errorf("reload result %+v: want changed, the https listener kept", res)
	}
	if got := e.addr(0); got != addr {
		t.Errorf("the https listener moved from %s to %s", addr, got)
	}
	if got := servedSerial(t, addr, "web.test", cs.pool); got != newSerial {
		t.Errorf("the handshake after the reload got certificate %d, want the new one, %d", got, newSerial)
	}
	if got := httpOn(t, live, br, "web.test"); got != 200 {
		t.Errorf("the live TLS connection after the reload: status %d", got)
	}
	if got := live.ConnectionState().PeerCertificates[0].SerialNumber.Int64(); got != oldSerial {
		t.Errorf("the live connection's certificate is %d, want %d", got, oldSerial)
	}
}

// Reloads over the admin API need its bearer token: without it the
// request is refused with 401 and the config is not even read.
func TestReloadNeedsAdminToken(t *testing.T) {
	e, base := reloadable(t, nil, map[string]config.EdgeService{"echo": {Listen: "127.0.0.1:0"}})
	var loads atomic.Int32
	loadWith(e, func() config.Edge { loads.Add(1); return base })
	for _, token := range []string{"", "not-the-token"} {
		req, _ := http.NewRequest(http.MethodPost, "http://"+e.AdminAddr().String()+"/v1/reload", nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("reload with token %q: status %d, want 401", token, resp.StatusCode)
		}
	}
	if n := loads.Load(); n != 0 {
		t.Fatalf("the config was read %d times for unauthorized reloads", n)
	}
	real, err := e.AdminToken()
	if err != nil {
		t.Fatal(err)
	}
	res, err := (&admin.Client{Addr: e.AdminAddr().String(), Token: real}).Reload(context.Background())
	if err != nil || res.Changed {
		t.Fatalf("reload with the token: %+v, %v; want nothing changed", res, err)
	}
	if n := loads.Load(); n != 1 {
		t.Errorf("the config was read %d times for one reload", n)
	}
}

// Ten reloads at once, while clients keep echoing through a service that
// every config has: they run one at a time (no torn state: the service
// that every other config adds is there exactly when the config read
// last has it), no client loses a byte, and nothing races (-race).
func TestConcurrentReloadsWithTraffic(t *testing.T) {
	echo := testnet.Echo(t)
	e, base := reloadable(t, nil, map[string]config.EdgeService{"echo": {Listen: "127.0.0.1:0"}, "extra": {Listen: "127.0.0.1:0"}})
	e.connect(t, map[string]string{"echo": echo.Addr(), "extra": echo.Addr()}, nil)
	echoAddr := e.ServiceAddr("echo").String()

	var loads atomic.Int32
	var last atomic.Bool // whether the config read last has "extra"
	loadWith(e, func() config.Edge {
		next := base
		next.Services = map[string]config.EdgeService{"echo": base.Services["echo"]}
		withExtra := loads.Add(1)%2 == 1
		if withExtra {
			next.Services["extra"] = config.EdgeService{Listen: "127.0.0.1:0", Policy: config.Policy{MaxConnections: int(loads.Load())}}
		}
		last.Store(withExtra)
		return next
	})

	ctx, stop := context.WithCancel(context.Background())
	var traffic sync.WaitGroup
	errs := make(chan error, 4)
	for i := range 4 {
		traffic.Go(func() {
			for n := 0; n < 50 && ctx.Err() == nil; n++ {
				msg := []byte(strings.Repeat(fmt.Sprintf("client %d message %d;", i, n), 100))
				if err := echoBytesAt(echoAddr, msg); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	var reloads sync.WaitGroup
	for range 10 {
		reloads.Go(func() {
			if _, err := e.Reload(context.Background()); err != nil {
				t.Errorf("reload: %v", err)
			}
		})
	}
	reloads.Wait()
	stop()
	traffic.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := loads.Load(); n != 10 {
		t.Errorf("the config was read %d times for 10 reloads", n)
	}
	has := e.ServiceAddr("extra") != nil
	if has != last.Load() {
		t.Errorf("service extra has a port: %v; the config read last has it: %v", has, last.Load())
	}
	listed := false
	for _, s := range e.Status(context.Background()).Services {
		listed = listed || s.Name == "extra"
	}
	if listed != last.Load() {
		t.Errorf("status lists service extra: %v; the config read last has it: %v", listed, last.Load())
	}
	if has {
		if err := echoBytesAt(e.ServiceAddr("extra").String(), []byte("extra works")); err != nil {
			t.Errorf("the added service: %v", err)
		}
	}
}

// echoBytesAt sends msg through an echo service at addr, half-closes, and
// checks every byte comes back.
func echoBytesAt(addr string, msg []byte) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(msg); err != nil {
		return err
	}
	c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil {
		return err
	}
	if string(got) != string(msg) {
		return errors.New("echo: bytes changed or lost")
	}
	return nil
}

// A reload that changes a socks5 listener's users and adds a service
// keeps the listener and its live connection: the new account gets in,
// the removed one does not, and the added service is known by name.
func TestReloadChangesSOCKSUsersAndServices(t *testing.T) {
	echo := testnet.Echo(t)
	dir := t.TempDir()
	alicePW, bobPW := filepath.Join(dir, "alice"), filepath.Join(dir, "bob")
	os.WriteFile(alicePW, []byte("one\n"), 0o600)
	os.WriteFile(bobPW, []byte("two\n"), 0o600)
	e, base := reloadable(t, []config.Listener{{Kind: config.KindSOCKS5, Users: []config.SOCKSUser{{Name: "alice", PasswordFile: alicePW}}}},
		map[string]config.EdgeService{"echo": {}})
	e.connectWaiting(t, map[string]string{"echo": echo.Addr(), "extra": echo.Addr()}, nil, []string{"echo"})
	addr := e.addr(0)
	dial := func(user, pw, dst string) (net.Conn, error) {
		d, err := proxy.SOCKS5("tcp", addr, &proxy.Auth{User: user, Password: pw}, &net.Dialer{Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		return d.Dial("tcp", dst)
	}
	live, err := dial("alice", "one", "echo:7")
	if err != nil {
		t.Fatalf("alice before the reload: %v", err)
	}
	defer live.Close()
	exchange(t, live, "before the reload")

	loadWith(e, func() config.Edge {
		next := base
		next.Listeners = []config.Listener{{Kind: config.KindSOCKS5, Listen: base.Listeners[0].Listen, Users: []config.SOCKSUser{{Name: "bob", PasswordFile: bobPW}}}}
		next.Services = map[string]config.EdgeService{"echo": {}, "extra": {}}
		return next
	})
	res, err := e.Reload(context.Background())
	if err != nil {
		t.Fatalf("reload: %v", err)
	}
	if len(res.ListenersAdded)+len(res.ListenersRemoved) != 0 || strings.Join(res.ServicesAdded, ",") != "extra" {
		t.Errorf("reload result %+v: want the socks5 listener kept and extra added", res)
	}
	exchange(t, live, "after the reload")
	if c, err := dial("alice", "one", "echo:7"); err == nil {
		c.Close()
		t.Error("alice, removed by the reload, got in")
	}
	c, err := dial("bob", "two", "extra:7")
	if err != nil {
		t.Fatalf("bob to the added service extra: %v", err)
	}
	defer c.Close()
	if got := roundTrip(t, c.(*net.TCPConn), []byte("bob")); string(got) != "bob" {
		t.Errorf("bob through extra: %q", got)
	}
}

// exchange writes msg on a live connection to an echo service and reads
// it back, leaving the connection open.
func exchange(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatalf("write on the live connection: %v", err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != msg {
		t.Fatalf("live connection echoed %q, %v; want %q", got, err, msg)
	}
}

// A connector cannot make the edge stop routing to another connector's
// tunnels: a hello that copies the other's run (Hello.Instance) with
// another offer supersedes only tunnels of its own identity.
func TestSupersedeOnlyOwnTunnels(t *testing.T) {
	e, _ := reloadable(t, nil, map[string]config.EdgeService{"echo": {Listen: "127.0.0.1:0"}, "other": {Listen: "127.0.0.1:0"}})
	e.connect(t, map[string]string{"echo": testnet.Echo(t).Addr()}, nil)
	m := regexp.MustCompile(`msg="connector tunnel up".* name=site .*instance=(\S+)`).FindStringSubmatch(e.Logs.String())
	if m == nil {
		t.Fatalf("no instance in the victim's tunnel line:\n%s", e.Logs)
	}
	tc := enrolledConn(t, e, "mallory", "echo", "other")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sess, _, err := tunnel.Client(ctx, tc, wire.Hello{Instance: m[1], Services: []string{"echo", "other"}},
		tunnel.Config{KeepaliveInterval: 200 * time.Millisecond, KeepaliveTimeout: time.Second})
	if err != nil {
		t.Fatalf("mallory's tunnel: %v", err)
	}
	defer sess.Close()
	e.waitRoutes(t, "other", 1)
	e.waitRoutes(t, "echo", 2) // the victim's tunnel is still routed, beside mallory's
	if strings.Contains(e.Logs.String(), "re-announced its services") {
		t.Errorf("a hello of another connector superseded a tunnel:\n%s", e.Logs)
	}
}

// Re-announcing cannot make the edge hold more tunnels for one identity
// than twice the pool bound: superseded tunnels are let finish, but a
// connector that keeps changing its offer is refused at 32 tunnels.
func TestSupersededTunnelsAreBounded(t *testing.T) {
	e, _ := reloadable(t, nil, map[string]config.EdgeService{"a": {Listen: "127.0.0.1:0"}, "b": {Listen: "127.0.0.1:0"}})
	dial := enrolledDialer(t, e, "mallory", "a", "b")
	cfg := tunnel.Config{KeepaliveInterval: 200 * time.Millisecond, KeepaliveTimeout: time.Second}
	hello := func(services ...string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		sess, _, err := tunnel.Client(ctx, dial(), wire.Hello{Instance: "run-1", Services: services}, cfg)
		if err == nil {
			t.Cleanup(func() { sess.Close() })
		}
		return err
	}
	for i := range config.MaxPool {
		if err := hello("a"); err != nil {
			t.Fatalf("tunnel %d offering a: %v", i+1, err)
		}
	}
	e.waitRoutes(t, "a", config.MaxPool)
	if err := hello("a"); err == nil || !strings.Contains(err.Error(), "already holds 16 tunnels") {
		t.Fatalf("a 17th tunnel with the same offer: %v, want refused", err)
	}
	// A new offer: its tunnels supersede the first 16, which may finish.
	for i := range config.MaxPool {
		if err := hello("a", "b"); err != nil {
			t.Fatalf("tunnel %d offering a and b: %v", i+1, err)
		}
	}
	e.waitRoutes(t, "b", config.MaxPool)
	e.waitRoutes(t, "a", config.MaxPool) // the superseded ones are routed no more
	if err := hello("b"); err == nil || !strings.Contains(err.Error(), "already holds 32 tunnels") {
		t.Fatalf("a 33rd tunnel with yet another offer: %v, want refused", err)
	}
}

// A reload that removes an http listener closes its port at once; a
// WebSocket carried through it goes on within the drain timeout (2s
// here) and is cut off at its end.
func TestReloadRemovesHTTPListenerAndDrainsItsWebSockets(t *testing.T) {
	e, base := reloadable(t, []config.Listener{{Kind: config.KindHTTP, EdgeHosts: []string{"edge.test"}}},
		map[string]config.EdgeService{"echo": {Listen: "127.0.0.1:0"}})
	e.connect(t, map[string]string{"echo": testnet.Echo(t).Addr()}, nil)
	addr := e.addr(0)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws://"+addr+"/ws/echo", &websocket.DialOptions{Host: "edge.test"})
	if err != nil {
		t.Fatalf("WebSocket to echo: %v", err)
	}
	defer ws.CloseNow()
	if got, err := wsRoundTrip(ctx, ws, []byte("before")); err != nil || string(got) != "before" {
		t.Fatalf("before the reload: %q, %v", got, err)
	}

	loadWith(e, func() config.Edge {
		next := base
		next.Listeners = nil
		return next
	})
	res, err := e.Reload(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(res.ListenersRemoved) != 1 {
		t.Errorf("reload result %+v: want the http listener removed", res)
	}
	reloaded := time.Now()
	if c, err := net.DialTimeout("tcp", addr, 2*time.Second); err == nil {
		c.Close()
		t.Fatalf("the removed http listener at %s still accepts connections", addr)
	}
	if got, err := wsRoundTrip(ctx, ws, []byte("during the drain")); err != nil || string(got) != "during the drain" {
		t.Fatalf("the live WebSocket after the reload: %q, %v", got, err)
	}
	if _, _, err := ws.Read(ctx); err == nil || ctx.Err() != nil {
		t.Fatalf("the live WebSocket was not cut off at the drain timeout: %v", err)
	}
	if d := time.Since(reloaded); d < time.Second {
		t.Errorf("the live WebSocket was cut %s after the reload, before the drain timeout (2s)", d)
	}
	e.Logs.WaitFor(t, 5*time.Second, 1, "removed listener: drain timeout, closing client connections still open")
	if err := echoBytesAt(e.ServiceAddr("echo").String(), []byte("the tcp port stays")); err != nil {
		t.Error(err)
	}
}
