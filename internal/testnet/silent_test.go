package testnet_test

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/pki"
	"github.com/sallyport/sallyport/internal/testnet"
	"github.com/sallyport/sallyport/internal/tunnel"
	"github.com/sallyport/sallyport/internal/wire"
	"golang.org/x/net/proxy"
)

// silentConnector enrolls a connector granted services, stops it, and
// opens a tunnel with its identity that offers services and never answers
// a stream: a connector that hangs.
func silentConnector(t *testing.T, e *listenerEdge, name string, services ...string) {
	t.Helper()
	tc := enrolledConn(t, e, name, services...)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Alive (it answers pings, as the edge's keepalive wants), silent about
	// streams.
	cfg := tunnel.Config{KeepaliveInterval: 200 * time.Millisecond, KeepaliveTimeout: time.Second}
	sess, _, err := tunnel.Client(ctx, tc, wire.Hello{Instance: name, Services: services}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sess.Close() })
	e.waitTunnelsOf(t, name, 1)
}

// enrolledConn enrolls a connector granted services, stops it, and
// returns a TLS connection to the edge's tunnel port with its identity,
// for the test to speak on as it likes. The caller closes it.
func enrolledConn(t *testing.T, e *listenerEdge, name string, services ...string) *tls.Conn {
	t.Helper()
	return enrolledDialer(t, e, name, services...)()
}

// enrolledDialer enrolls a connector granted services, stops it, and
// returns a function that opens a TLS connection to the tunnel port with
// its identity, once per call.
func enrolledDialer(t *testing.T, e *listenerEdge, name string, services ...string) func() *tls.Conn {
	t.Helper()
	dir := t.TempDir()
	backends := map[string]string{}
	for _, s := range services {
		backends[s] = testnet.Echo(t).Addr()
	}
	c := testnet.StartConnector(t, e.keyfileFor(t, name, services...), testnet.ConnectorOptions{DataDir: dir, Services: backends})
	c.WaitTunnels(t, 1)
	c.Stop()
	e.waitTunnelsOf(t, name, 0)
	cert, ca, err := pki.LoadIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	return func() *tls.Conn {
		raw, err := net.Dial("tcp", e.TunnelAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		return tls.Client(raw, pki.ClientTLSConfig(ca, pki.PinOf(ca), &cert, nil))
	}
}

// waitTunnelsOf waits until connector name holds n tunnels at the edge.
func (e *listenerEdge) waitTunnelsOf(t *testing.T, name string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := 0
		for _, c := range e.Status(context.Background()).Connectors {
			if c.Name == name {
				got++
			}
		}
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("connector %s holds %d tunnels after 10s, want %d", name, got, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A connector that never answers a new stream hangs no client: each is
// told in its protocol that the service is unavailable once the edge's
// answer_timeout has passed.
func TestSilentConnectorCannotHangClients(t *testing.T) {
	e := startListenerEdge(t, []config.Listener{{Kind: config.KindSOCKS5}, {Kind: config.KindHTTP}},
		map[string]config.EdgeService{"svc": {Hosts: []string{"svc.test"}}},
		func(c *config.Edge) { c.Tunnel.AnswerTimeout = 500 * time.Millisecond })
	silentConnector(t, e, "silent", "svc")

	d, err := proxy.SOCKS5("tcp", e.addr(0), nil, &net.Dialer{Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if c, err := d.Dial("tcp", "svc:80"); err == nil || !strings.Contains(err.Error(), "network unreachable") {
		if c != nil {
			c.Close()
		}
		t.Errorf("SOCKS5 CONNECT through a silent connector: %v; want network unreachable", err)
	}
	status, body, _ := get(t, newHTTPClient(t, nil), "http://"+e.addr(1)+"/", "svc.test", nil)
	if status != http.StatusServiceUnavailable || !strings.Contains(body, "did not answer") {
		t.Errorf("HTTP through a silent connector: %d %q; want 503 saying the connector did not answer", status, body)
	}
	e.wantRefusals(t, map[string]int64{"connector_timeout": 2})
}

// A SOCKS client naming an address is served by the connector that allows
// it even while other connectors stay silent: the edge asks them all at
// once, so the silent ones delay nobody. (Asked one after the other in
// the edge's random order, three silent connectors of four would come
// first three times in four.)
func TestSOCKSAddressIsNotHeldUpByASilentConnector(t *testing.T) {
	target := testnet.Echo(t)
	e := startListenerEdge(t, []config.Listener{{Kind: config.KindSOCKS5}},
		map[string]config.EdgeService{"svc": {}, "db": {}},
		func(c *config.Edge) { c.Tunnel.AnswerTimeout = time.Minute })
	for _, name := range []string{"silent-1", "silent-2", "silent-3"} {
		silentConnector(t, e, name, "svc")
	}
	testnet.StartConnector(t, e.keyfileFor(t, "site", "db"), testnet.ConnectorOptions{Services: map[string]string{"db": target.Addr()}})
	e.waitRoutes(t, "db", 1)

	// Asked one after the other, the silent connector would hold the
	// lookup for the answer timeout, a minute: far past this dial's.
	d, err := proxy.SOCKS5("tcp", e.addr(0), nil, &net.Dialer{Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	c, err := d.Dial("tcp", target.Addr())
	if err != nil {
		t.Fatalf("SOCKS5 CONNECT to an allowed address beside a silent connector: %v", err)
	}
	defer c.Close()
	if got := roundTrip(t, c.(*net.TCPConn), []byte("not held up")); string(got) != "not held up" {
		t.Errorf("echo: %q", got)
	}
}
