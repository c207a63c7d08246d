package doctor_test

import (
	"context"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/admin"
	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/doctor"
	"github.com/sallyport/sallyport/internal/loopback"
	"github.com/sallyport/sallyport/internal/pki"
	"github.com/sallyport/sallyport/internal/pki/pkitest"
	"github.com/sallyport/sallyport/internal/realproxy"
	"github.com/sallyport/sallyport/internal/testnet"
	"github.com/sallyport/sallyport/internal/wstunnel"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// site is an edge exposing "echo" and a keyfile for a connector that may
// serve it.
type site struct {
	edge    *testnet.Edge
	keyfile string
}

func newSite(t *testing.T, o testnet.EdgeOptions) site {
	t.Helper()
	o.Expose = map[string]string{"echo": ""}
	e := testnet.StartEdge(t, o)
	return site{edge: e, keyfile: e.Keyfile(t, "site", time.Hour, "echo")}
}

// config is the connector's config for keyfile, reaching the edges
// directly whatever the environment says, with tune applied last.
func connectorConfig(t *testing.T, keyfile string, tune func(*config.Connector)) config.Connector {
	t.Helper()
	return testnet.ConnectorConfig(t, keyfile, testnet.ConnectorOptions{
		Services: map[string]string{"echo": "127.0.0.1:7"},
		Tune: func(c *config.Connector) {
			c.Tunnel.Proxy = config.ProxyDirect
			if tune != nil {
				tune(c)
			}
		},
	})
}

// enrol runs the connector of cfg until its tunnel is up and, if
// saved is set, until it has saved the edge set the cluster announced;
// then it stops it.
func enrol(t *testing.T, keyfile string, cfg config.Connector, saved ...bool) {
	t.Helper()
	c := testnet.StartConnector(t, keyfile, testnet.ConnectorOptions{DataDir: cfg.DataDir, Services: map[string]string{"echo": "127.0.0.1:7"},
		Tune: func(c *config.Connector) { c.Tunnel.Proxy = config.ProxyDirect }})
	c.WaitTunnels(t, 1)
	for deadline := time.Now().Add(10 * time.Second); len(saved) > 0; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(filepath.Join(cfg.DataDir, "cluster.json")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the connector saved no cluster edge set within 10 s")
		}
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
}

// run runs the doctor and logs its table.
func run(t *testing.T, cfg config.Connector) doctor.Report {
	t.Helper()
	r, err := doctor.Run(context.Background(), cfg, doctor.Options{})
	if err != nil {
		t.Fatalf("doctor.Run: %v", err)
	}
	var b strings.Builder
	r.Write(&b)
	t.Logf("report:\n%s", b.String())
	return r
}

// want checks one row: its status and words its detail must contain.
func want(t *testing.T, r doctor.Report, check, edge string, status doctor.Status, words ...string) {
	t.Helper()
	x, ok := r.Find(check, edge)
	if !ok {
		t.Fatalf("no %s row for edge %q", check, edge)
	}
	if x.Status != status {
		t.Errorf("%s %s: %s (%s), want %s", check, edge, x.Status, x.Detail, status)
	}
	for _, w := range words {
		if !strings.Contains(x.Detail, w) {
			t.Errorf("%s %s: detail %q lacks %q", check, edge, x.Detail, w)
		}
	}
}

// tunnelsUp counts the edge's log lines of connector tunnels coming up.
func tunnelsUp(e *testnet.Edge) int {
	return strings.Count(e.Logs.String(), "connector tunnel up")
}

// Every check passes for a healthy setup, before enrollment and after.
// Before, the keyfile's one-time token stays unused: the connector
// enrolls with it afterwards. Neither run counts as the connector at the
// edge: no tunnel comes up for it.
func TestAllPassAndNothingChanges(t *testing.T) {
	s := newSite(t, testnet.EdgeOptions{})
	addr := s.edge.TunnelAddr().String()
	cfg := connectorConfig(t, s.keyfile, nil)

	r := run(t, cfg)
	if r.Failed() {
		t.Fatal("a check failed for a healthy setup before enrollment")
	}
	want(t, r, doctor.CheckCertificate, "", doctor.OK, "not enrolled yet", "unused")
	want(t, r, doctor.CheckResolve, addr, doctor.OK, "IP address")
	want(t, r, doctor.CheckReach, addr, doctor.OK, "TCP to "+addr)
	want(t, r, doctor.CheckTLS, addr, doctor.OK, "chains to the pinned CA")
	want(t, r, doctor.CheckClock, addr, doctor.OK, "±")
	if n := tunnelsUp(s.edge); n != 0 {
		t.Fatalf("the edge saw %d tunnels after the doctor", n)
	}

	// The token is still good: the connector enrolls with it.
	enrol(t, s.keyfile, cfg)
	before, start := tunnelsUp(s.edge), time.Now()

	r = run(t, cfg)
	if r.Failed() {
		t.Fatal("a check failed for a healthy enrolled connector")
	}
	want(t, r, doctor.CheckCertificate, "", doctor.OK, "connector site", "valid until")
	want(t, r, doctor.CheckTLS, addr, doctor.OK)
	want(t, r, doctor.CheckClock, addr, doctor.OK)
	if n := tunnelsUp(s.edge); n != before {
		t.Fatalf("the doctor brought a tunnel up at the edge (%d, was %d)", n, before)
	}
	for _, st := range s.edge.Status(context.Background()).Connectors {
		if st.Since.After(start) {
			t.Fatalf("the edge lists a tunnel of %s since %s, after the doctor started", st.Name, st.Since)
		}
	}
}

// An edge of another CA than the keyfile pins fails the TLS check,
// named as such, and its clock is not asked.
func TestWrongCAPin(t *testing.T) {
	s := newSite(t, testnet.EdgeOptions{})
	other := testnet.StartEdge(t, testnet.EdgeOptions{})
	addr := other.TunnelAddr().String()
	r := run(t, connectorConfig(t, s.keyfile, func(c *config.Connector) { c.Edges = []string{addr} }))
	if !r.Failed() {
		t.Fatal("the report passed with an edge of another CA")
	}
	want(t, r, doctor.CheckReach, addr, doctor.OK)
	want(t, r, doctor.CheckTLS, addr, doctor.Fail, "pin mismatch", "get a new keyfile")
	want(t, r, doctor.CheckClock, addr, doctor.Skip)
}

// A closed port fails the reach check with the system's words.
func TestClosedPort(t *testing.T) {
	s := newSite(t, testnet.EdgeOptions{})
	addr := loopback.FreeAddr(t) // nothing listens there
	r := run(t, connectorConfig(t, s.keyfile, func(c *config.Connector) { c.Edges = []string{addr} }))
	if !r.Failed() {
		t.Fatal("the report passed with a closed port")
	}
	want(t, r, doctor.CheckResolve, addr, doctor.OK)
	want(t, r, doctor.CheckReach, addr, doctor.Fail, "connection refused")
	want(t, r, doctor.CheckTLS, addr, doctor.Skip)
}

// A host name that does not resolve fails the resolve check, and nothing
// after it is tried; an edge that does answer is still checked in full.
func TestNameDoesNotResolve(t *testing.T) {
	s := newSite(t, testnet.EdgeOptions{})
	good := s.edge.TunnelAddr().String()
	bad := "no-such-edge.invalid:5500" // .invalid never resolves (RFC 6761)
	r := run(t, connectorConfig(t, s.keyfile, func(c *config.Connector) { c.Edges = []string{bad, good} }))
	if !r.Failed() {
		t.Fatal("the report passed with a name that does not resolve")
	}
	want(t, r, doctor.CheckResolve, bad, doctor.Fail, "no-such-edge.invalid does not resolve")
	want(t, r, doctor.CheckReach, bad, doctor.Skip, "resolve failed")
	want(t, r, doctor.CheckClock, good, doctor.OK)
	if r[1].Edge != bad || r[len(r)-1].Edge != good {
		t.Errorf("rows not in the edges' order: %v", r)
	}
}

// Through a real HTTP CONNECT proxy (tinyproxy, with credentials) every
// check passes and the reach check names the proxy without its
// password; a proxy that refuses the credentials fails the reach check
// with its reason. A name only the proxy could resolve is not failed.
func TestThroughProxy(t *testing.T) {
	realproxy.Require(t, "tinyproxy")
	s := newSite(t, testnet.EdgeOptions{})
	addr := s.edge.TunnelAddr().String()
	port := realproxy.FreePort(t)
	realproxy.Start(t, port, realproxy.Tinyproxy(t, t.TempDir(), realproxy.TinyproxyConfig{Listen: "127.0.0.1", Port: port})...)
	proxy := func(pass string) func(*config.Connector) {
		return func(c *config.Connector) {
			c.Tunnel.Proxy = fmt.Sprintf("http://%s:%s@127.0.0.1:%d", realproxy.User, pass, port)
		}
	}

	r := run(t, connectorConfig(t, s.keyfile, proxy(realproxy.Password)))
	if r.Failed() {
		t.Fatal("a check failed through a working proxy")
	}
	x, _ := r.Find(doctor.CheckReach, addr)
	if !strings.Contains(x.Detail, fmt.Sprintf("through the proxy http://%s:xxxxx@127.0.0.1:%d", realproxy.User, port)) || strings.Contains(x.Detail, realproxy.Password) {
		t.Errorf("reach through the proxy: %q", x.Detail)
	}
	want(t, r, doctor.CheckClock, addr, doctor.OK)

	r = run(t, connectorConfig(t, s.keyfile, proxy("wrong-pass")))
	want(t, r, doctor.CheckReach, addr, doctor.Fail, "refused the credentials")

	onlyProxy := "edge.invalid:5500"
	r = run(t, connectorConfig(t, s.keyfile, func(c *config.Connector) {
		proxy(realproxy.Password)(c)
		c.Edges = []string{onlyProxy}
	}))
	want(t, r, doctor.CheckResolve, onlyProxy, doctor.Skip, "the proxy 127.0.0.1:")
	want(t, r, doctor.CheckReach, onlyProxy, doctor.Fail)
}

// A connector whose certificate has expired fails the certificate check,
// and the edge, judging it by its own clock, refuses it in the TLS
// handshake: the TLS check fails with the edge's verdict.
func TestExpiredCertificate(t *testing.T) {
	s := newSite(t, testnet.EdgeOptions{CertificateTTL: time.Second})
	addr := s.edge.TunnelAddr().String()
	cfg := connectorConfig(t, s.keyfile, nil)
	enrol(t, s.keyfile, cfg)

	var r doctor.Report
	deadline := time.Now().Add(10 * time.Second)
	for {
		r = run(t, cfg)
		if x, _ := r.Find(doctor.CheckCertificate, ""); x.Status == doctor.Fail || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	want(t, r, doctor.CheckCertificate, "", doctor.Fail, "expired", "--replace")
	want(t, r, doctor.CheckTLS, addr, doctor.Fail, "the edge refused this connector's certificate", "expired certificate")
	want(t, r, doctor.CheckClock, addr, doctor.Skip)
}

// An edge reached over WebSocket (a wss:// address on its https
// listener) is checked through the WebSocket, as the connector dials it:
// with the listener's CA every check passes; without it, the outer TLS
// fails the reach check, saying so.
func TestOverWebSocket(t *testing.T) {
	webCA := pkitest.NewCA(t)
	dir := t.TempDir()
	if _, err := pki.LoadOrCreateServerCert(dir, webCA, []string{"127.0.0.1"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "web-ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: webCA.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	e := testnet.StartEdge(t, testnet.EdgeOptions{Expose: map[string]string{"echo": ""}, Tune: func(c *config.Edge) {
		c.Listeners = append(c.Listeners, config.Listener{Kind: config.KindHTTPS, Listen: "127.0.0.1:0",
			Certificates: []config.CertificateFiles{{Cert: filepath.Join(dir, pki.EdgeCertFile), Key: filepath.Join(dir, pki.EdgeKeyFile)}}})
	}})
	addr := "wss://" + e.ListenerAddr(0).String() + wstunnel.Path
	kf, err := e.AdminClient(t).CreateKeyfile(context.Background(), admin.TokenRequest{Name: "site", TTL: "1h", Edges: []string{addr}, Services: []string{"echo"}})
	if err != nil {
		t.Fatal(err)
	}
	keyfile := filepath.Join(t.TempDir(), "site.keyfile")
	if err := os.WriteFile(keyfile, kf, 0o600); err != nil {
		t.Fatal(err)
	}

	r := run(t, connectorConfig(t, keyfile, func(c *config.Connector) { c.Tunnel.WebSocketCA = caFile }))
	if r.Failed() {
		t.Fatal("a check failed over WebSocket")
	}
	want(t, r, doctor.CheckReach, addr, doctor.OK, "WebSocket upgrade at "+addr)
	want(t, r, doctor.CheckTLS, addr, doctor.OK, "chains to the pinned CA")
	want(t, r, doctor.CheckClock, addr, doctor.OK)

	r = run(t, connectorConfig(t, keyfile, nil))
	want(t, r, doctor.CheckReach, addr, doctor.Fail, "before the tunnel's own TLS", "unknown authority")
}

// The edges the cluster announced are checked too, as the connector
// dials them at start: here the connector's own address is a relay, and
// the edge announces its tunnel port, which the connector has not seen
// answer as that edge through its own address.
func TestAnnouncedEdgesAreChecked(t *testing.T) {
	s := newSite(t, testnet.EdgeOptions{})
	addr := s.edge.TunnelAddr().String()
	cfg := connectorConfig(t, s.keyfile, nil)
	enrol(t, s.keyfile, cfg, true)
	relay := loopback.StartRelay(t, addr)
	cfg.Edges = []string{relay.Addr()}

	r := run(t, cfg)
	if r.Failed() {
		t.Fatal("a check failed")
	}
	want(t, r, doctor.CheckReach, relay.Addr(), doctor.OK)
	want(t, r, doctor.CheckResolve, addr, doctor.OK, "announced by the cluster")
	want(t, r, doctor.CheckClock, addr, doctor.OK)
}
