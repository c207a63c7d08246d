package testnet_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/sallyport/sallyport/internal/admin"
	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/loopback"
	"github.com/sallyport/sallyport/internal/pki"
	"github.com/sallyport/sallyport/internal/pki/pkitest"
	"github.com/sallyport/sallyport/internal/testnet"
	"github.com/sallyport/sallyport/internal/tunnel"
	"github.com/sallyport/sallyport/internal/wire"
	"github.com/sallyport/sallyport/internal/wstunnel"
)

// wsTunnelEdge starts an edge exposing services (each on a tcp port of
// its own) with an https listener (0) whose certificate, for 127.0.0.1
// and web.test, comes from the returned test CA; service "web" is
// routed by Host web.test on it.
func wsTunnelEdge(t *testing.T, services ...string) (*testnet.Edge, *certs) {
	t.Helper()
	return wsTunnelEdgeTTL(t, 0, services...)
}

// wsTunnelEdgeTTL is wsTunnelEdge with connector certificates that live
// ttl (0: the default).
func wsTunnelEdgeTTL(t *testing.T, ttl time.Duration, services ...string) (*testnet.Edge, *certs) {
	t.Helper()
	cs := newCerts(t, "test web CA")
	files, _, _ := cs.issue(t, "edge", false, "127.0.0.1", "web.test")
	expose := map[string]string{}
	for _, s := range services {
		expose[s] = ""
	}
	e := testnet.StartEdge(t, testnet.EdgeOptions{Expose: expose, CertificateTTL: ttl, Tune: func(c *config.Edge) {
		c.Listeners = append(c.Listeners, config.Listener{Kind: config.KindHTTPS, Listen: "127.0.0.1:0",
			Certificates: []config.CertificateFiles{files}})
		c.Services["web"] = config.EdgeService{Hosts: []string{"web.test"}}
	}})
	return e, cs
}

// wssAddr is the edge's tunnel address on its https listener, or on addr
// (a relay in front of it) if given.
func wssAddr(e *testnet.Edge, addr ...string) string {
	a := e.ListenerAddr(0).String()
	if len(addr) > 0 {
		a = addr[0]
	}
	return "wss://" + a + wstunnel.Path
}

// wsKeyfile writes a keyfile for connector name, granted services, that
// carries edges (wss:// addresses) instead of the edge's tunnel port.
func wsKeyfile(t *testing.T, e *testnet.Edge, name string, edges []string, services ...string) string {
	t.Helper()
	kf, err := e.AdminClient(t).CreateKeyfile(context.Background(), admin.TokenRequest{Name: name, TTL: "1h", Edges: edges, Services: services})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), name+".keyfile")
	if err := os.WriteFile(path, kf, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// wsSetup starts an edge and a connector that enrolls and keeps its
// tunnel over the edge's https listener only: its keyfile names the wss
// address and nothing else, and it trusts the listener's test CA.
func wsSetup(t *testing.T, backends map[string]string, edges ...string) (*testnet.Edge, *testnet.Connector) {
	t.Helper()
	var services []string
	for s := range backends {
		services = append(services, s)
	}
	e, cs := wsTunnelEdge(t, services...)
	if len(edges) == 0 {
		edges = []string{wssAddr(e)}
	}
	c := testnet.StartConnector(t, wsKeyfile(t, e, "site-ws", edges, services...), testnet.ConnectorOptions{
		Services: backends,
		Tune:     func(c *config.Connector) { c.Tunnel.WebSocketCA = cs.caFile },
	})
	c.WaitTunnels(t, 1)
	for s := range backends {
		e.WaitRoutes(t, s, 1, 10*time.Second)
	}
	return e, c
}

// The connector enrolls through the https listener and serves streams
// over it as over the tunnel port: bytes intact both ways, a half-close
// that keeps the response, a client reset that reaches the back-end.
func TestWebSocketTunnelCarriesStreams(t *testing.T) {
	echo := testnet.Echo(t)
	reply := randomBytes(1<<20, 7)
	digest := testnet.Digest(t, reply)
	closed := make(chan error, 1)
	firehose := testnet.Serve(t, func(c *net.TCPConn) {
		chunk := bytes.Repeat([]byte("x"), 32<<10)
		for {
			if _, err := c.Write(chunk); err != nil {
				closed <- err
				return
			}
		}
	})
	e, c := wsSetup(t, map[string]string{"echo": echo.Addr(), "digest": digest.Addr(), "firehose": firehose.Addr()})
	e.Logs.WaitFor(t, 5*time.Second, 1, "connector tunnel up", "via=websocket")
	if n := e.Logs.Count("enroll", "via=websocket"); n == 0 {
		t.Logf("edge logs:\n%s", e.Logs)
	}
	if cs := e.Status(t.Context()).Connectors; len(cs) != 1 || cs[0].Transport != "websocket" {
		t.Fatalf("status: %+v; want the one tunnel, via websocket", cs)
	}

	t.Run("bytes intact", func(t *testing.T) {
		data := randomBytes(8<<20, 1)
		if got := roundTrip(t, e.Dial(t, "echo"), data); !bytes.Equal(got, data) {
			t.Fatalf("echo over the WebSocket tunnel: %d bytes back of %d, or damaged", len(got), len(data))
		}
	})
	t.Run("half-close", func(t *testing.T) {
		request := randomBytes(300<<10, 8)
		got := roundTrip(t, e.Dial(t, "digest"), request)
		want := sha256.Sum256(request)
		if len(got) != len(want)+len(reply) || !bytes.Equal(got[:len(want)], want[:]) || !bytes.Equal(got[len(want):], reply) {
			t.Fatalf("after half-close: %d bytes, want the digest of the request then the %d-byte reply, intact", len(got), len(reply))
		}
	})
	t.Run("client reset", func(t *testing.T) {
		conn := e.Dial(t, "firehose")
		if _, err := io.ReadFull(conn, make([]byte, 1<<20)); err != nil {
			t.Fatal(err)
		}
		conn.SetLinger(0)
		conn.Close()
		select {
		case <-closed:
		case <-time.After(10 * time.Second):
			t.Fatal("the back-end is still being fed 10s after its client reset")
		}
	})
	if c.Tunnels() != 1 {
		t.Errorf("connector holds %d tunnels, want the one", c.Tunnels())
	}
}

// A WebSocket tunnel that goes silent (the path freezes) is detected by
// keepalives and replaced, and its clients are reset.
func TestWebSocketTunnelSilenceIsDetected(t *testing.T) {
	echo := testnet.Echo(t)
	e, cs := wsTunnelEdge(t, "echo")
	relay := loopback.StartRelay(t, e.ListenerAddr(0).String())
	c := testnet.StartConnector(t, wsKeyfile(t, e, "site-ws", []string{wssAddr(e, relay.Addr())}, "echo"), testnet.ConnectorOptions{
		Services: map[string]string{"echo": echo.Addr()},
		Tune:     func(c *config.Connector) { c.Tunnel.WebSocketCA = cs.caFile },
	})
	c.WaitTunnels(t, 1)
	e.WaitRoutes(t, "echo", 1, 5*time.Second)
	live := e.Dial(t, "echo")
	live.SetDeadline(time.Now().Add(20 * time.Second))
	live.Write([]byte("hello"))
	if _, err := io.ReadFull(live, make([]byte, 5)); err != nil {
		t.Fatal(err)
	}
	relay.Freeze()
	c.Logs.WaitFor(t, 10*time.Second, 1, "tunnel down", "cause=")
	e.WaitRoutes(t, "echo", 0, 10*time.Second)
	if _, err := io.ReadAll(live); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("client of a dead WebSocket tunnel: read error %v; want a connection reset", err)
	}
	relay.Thaw()
	c.WaitTunnels(t, 1)
	e.WaitRoutes(t, "echo", 1, 10*time.Second)
	if got := roundTrip(t, e.Dial(t, "echo"), []byte("new tunnel")); string(got) != "new tunnel" {
		t.Fatalf("echo over the new tunnel: %q", got)
	}
}

// A connector whose only way to the edge is the WebSocket renews its
// certificate through it, again and again, while its tunnel carries on.
func TestWebSocketTunnelRenewal(t *testing.T) {
	echo := testnet.Echo(t)
	e, cs := wsTunnelEdgeTTL(t, 3*time.Second, "echo")
	c := testnet.StartConnector(t, wsKeyfile(t, e, "site-ws", []string{wssAddr(e)}, "echo"), testnet.ConnectorOptions{
		Services: map[string]string{"echo": echo.Addr()},
		Tune:     func(c *config.Connector) { c.Tunnel.WebSocketCA = cs.caFile },
	})
	c.WaitTunnels(t, 1)
	e.WaitRoutes(t, "echo", 1, 10*time.Second)
	e.Logs.WaitFor(t, 20*time.Second, 2, "connector certificate renewed", "via=websocket")
	if got := roundTrip(t, e.Dial(t, "echo"), []byte("after renewals")); string(got) != "after renewals" {
		t.Fatalf("echo after the renewals: %q", got)
	}
}

// Revoking a connector whose tunnel runs over a WebSocket ends it at
// once, and the connector stops with the edge's reason.
func TestWebSocketTunnelRevocation(t *testing.T) {
	echo := testnet.Echo(t)
	e, c := wsSetup(t, map[string]string{"echo": echo.Addr()})
	conn := e.Dial(t, "echo")
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	if got := roundTrip(t, e.Dial(t, "echo"), []byte("before")); string(got) != "before" {
		t.Fatalf("echo: %q", got)
	}
	ended := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, conn)
		ended <- err
	}()
	conn.Write([]byte("x"))
	if _, err := e.AdminClient(t).RevokeConnector(context.Background(), "site-ws"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("the live client went on 5s after the revocation")
	}
	err := c.Done(t, 20*time.Second)
	if err == nil || !strings.Contains(err.Error(), "revoked at") {
		t.Fatalf("the revoked connector stopped with %v; want the edge's reason", err)
	}
	e.Logs.WaitFor(t, 5*time.Second, 1, "tunnel refused: connector revoked", "via=websocket")
}

// What a stranger gets at the tunnel's path: a bare 400 for a request
// that is no WebSocket (on any host name, a service's too: the path is
// the edge's), a close that says why for a text message, and a cut-off for a WebSocket whose inner TLS never starts.
func TestWebSocketTunnelPathRefusesStrangers(t *testing.T) {
	e, cs := wsTunnelEdge(t)
	addr := e.ListenerAddr(0).String()
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: cs.pool}}, Timeout: 10 * time.Second}
	t.Cleanup(client.CloseIdleConnections)

	t.Run("not a WebSocket", func(t *testing.T) {
		for _, host := range []string{"127.0.0.1", "web.test"} {
			req, _ := http.NewRequest("GET", "https://"+addr+wstunnel.Path, nil)
			req.Host = host
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest || strings.Contains(strings.ToLower(string(body)), "sallyport") || strings.Contains(string(body), "tunnel") {
				t.Errorf("GET %s with Host %s: %d %q; want a bare 400 that names nothing", wstunnel.Path, host, resp.StatusCode, body)
			}
		}
	})
	dial := func(t *testing.T) *websocket.Conn {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		wc, _, err := websocket.Dial(ctx, "https://"+addr+wstunnel.Path, &websocket.DialOptions{HTTPClient: client})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { wc.CloseNow() })
		return wc
	}
	wantClose := func(t *testing.T, wc *websocket.Conn, code websocket.StatusCode, reason string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _, err := wc.Read(ctx)
		var ce websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != code || !strings.Contains(ce.Reason, reason) {
			t.Fatalf("read after the message: %v; want a close %v saying %q", err, code, reason)
		}
	}
	t.Run("text message", func(t *testing.T) {
		wc := dial(t)
		if err := wc.Write(context.Background(), websocket.MessageText, []byte("\x16\x03\x01")); err != nil {
			t.Fatal(err)
		}
		wantClose(t, wc, websocket.StatusUnsupportedData, "expected MessageBinary")
	})
	t.Run("never starts TLS", func(t *testing.T) {
		wc := dial(t)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, _, err := wc.Read(ctx); err == nil || ctx.Err() != nil {
			t.Fatalf("a silent tunnel WebSocket: %v; want it cut off within the first record's bound", err)
		}
		e.Logs.WaitFor(t, 5*time.Second, 1, "tunnel port: TLS handshake failed", "via=websocket")
	})
}

// Mutual TLS runs inside the WebSocket: a client whose certificate the
// edge did not issue is refused there, and a man in the middle that the
// connector's outer TLS trusts (a TLS-inspecting proxy) still cannot pass
// for the edge.
func TestWebSocketTunnelInnerTLSIsEndToEnd(t *testing.T) {
	t.Run("forged client certificate", func(t *testing.T) {
		e, cs := wsTunnelEdge(t)
		raw, err := wstunnel.Dial(context.Background(), wssAddr(e), (&net.Dialer{}).DialContext, cs.pool)
		if err != nil {
			t.Fatal(err)
		}
		defer raw.Close()
		forged, _ := pkitest.Connector(t, pkitest.NewCA(t), "site-a", time.Hour)
		tc := tls.Client(tunnel.NewTransport(raw), &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13,
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &forged, nil }})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _, err = tunnel.Client(ctx, tc, wire.Hello{Instance: "forged", Services: []string{"echo"}}, tunnel.Config{HandshakeTimeout: 10 * time.Second})
		if err == nil {
			t.Fatal("the edge served a tunnel to a certificate from another CA")
		}
		e.Logs.WaitFor(t, 5*time.Second, 1, "TLS handshake failed", "via=websocket")
	})
	t.Run("impostor behind a trusted outer certificate", func(t *testing.T) {
		echo := testnet.Echo(t)
		e, c := wsSetup(t, map[string]string{"echo": echo.Addr()})
		dir := c.Cfg.DataDir
		c.Stop()
		// The edge set the real edge announced would have the connector
		// dial it too: forget it, so that the impostor is all it knows.
		if err := os.Remove(filepath.Join(dir, "cluster.json")); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		// The impostor has the https certificate the connector trusts,
		// and its own CA for the inner TLS, as a proxy would.
		cs := newCerts(t, "inspecting proxy CA")
		_, _, outer := cs.issue(t, "mitm", false, "127.0.0.1")
		ca := pkitest.NewCA(t)
		inner, err := pki.LoadOrCreateServerCert(t.TempDir(), ca, []string{"127.0.0.1"}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{outer}})
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c, err := wstunnel.Accept(w, r)
			if err != nil {
				return
			}
			defer c.Close()
			tc := tls.Server(tunnel.NewTransport(c), pki.ServerTLSConfig(ca, inner, nil))
			tc.Handshake()
		})}
		go srv.Serve(l)
		t.Cleanup(func() { srv.Close() })
		c2 := testnet.StartConnector(t, "", testnet.ConnectorOptions{DataDir: dir, Services: map[string]string{"echo": echo.Addr()},
			Edges: []string{"wss://" + l.Addr().String() + wstunnel.Path},
			Tune:  func(c *config.Connector) { c.Tunnel.WebSocketCA = cs.caFile }})
		c2.Logs.WaitFor(t, 10*time.Second, 1, "tunnel dial failed", "TLS with edge")
		if c2.Tunnels() != 0 {
			t.Fatal("the connector opened a tunnel to an impostor")
		}
		_ = e
	})
}
