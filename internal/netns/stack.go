//go:build linux

package netns

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/realproxy"
)

// Ports of the stack. Public ports are the edge's, in the DMZ; back-end
// ports are in trusted, where nothing of sallyport listens.
const (
	TunnelPort = 5500 // the edge's tunnel port
	HTTPSPort  = 443  // the edge's https listener in NewWebSocketStack, which carries the tunnel

	WebPort    = 8080 // public port of service "web"
	RedisPort  = 6379 // public port of service "redis"
	SSHPort    = 2222 // public port of service "ssh"
	ClosedPort = 7000 // public port of service "closed", whose back-end refuses connections
	ProbePort  = 7100 // public port of service "probe", which no real connector offers
	HTTPPort   = 8090 // the edge's http listener, routing by Host: the only way to service "wiki"

	BackendHTTPPort   = 8000
	BackendRedisPort  = 6380
	BackendSSHPort    = 2200
	BackendClosedPort = 7001 // nothing listens here
)

// PublicPorts are the edge's public ports.
var PublicPorts = []int{WebPort, RedisPort, SSHPort, ClosedPort, ProbePort, HTTPPort}

// WikiHost is the Host name of service "wiki", the HTTP back-end again,
// which has no port of its own: clients reach it only through the http
// listener on HTTPPort, by Host.
const WikiHost = "wiki.test"

// WebSocketEdge is the connector's edge address in NewWebSocketStack.
const WebSocketEdge = "wss://" + DMZTrustedAddr + "/.sallyport/tunnel"

// Services are the services the stack's connectors offer and are granted.
var Services = []string{"web", "redis", "ssh", "closed", "wiki"}

// Timing of the tunnel, short so that faults are noticed quickly.
const (
	KeepaliveInterval = time.Second
	KeepaliveTimeout  = 4 * time.Second
	BackoffMax        = 2 * time.Second
)

// Sizes of the HTTP back-end's /big.bin and /huge.bin.
const (
	BigFileSize  = 8 << 20
	HugeFileSize = 32 << 20
)

// Stack is the whole deployment of one test: the topology, fenced; the
// back-ends in trusted; the built sallyport binary as the edge in the DMZ
// and as a connector in trusted, enrolled with a keyfile made in the DMZ.
type Stack struct {
	Topo  *Topology
	Bin   string // the sallyport binary
	HTTP  *HTTPServer
	Proxy *ProxyHost // NewProxyStack's proxy host; nil otherwise
	Redis *Redis
	SSHD  *SSHD

	EdgeData      string // the edge's data directory
	ConnectorData string // the connector's data directory
	scratch       string // for clients' files
	started       []*Process
	edgeConfig    string   // the edge's config file: its http listener and service "wiki"
	edgeArgs      []string // more flags for every start of the edge
	connectorArgs []string // more flags for every start of the connector
	keyfileArgs   []string // more flags for token create

	// Edge and Connector are the current processes; the fault tests
	// replace them (RestartEdge, RestartConnector). They are only read
	// and written by the test's own goroutine.
	Edge      *Process
	Connector *Process
}

// NewStack builds everything and waits until the connector's tunnel is up.
// bin is the sallyport binary to run; edgeArgs are more flags for the
// edge (its defaults otherwise).
func NewStack(t testing.TB, bin string, edgeArgs ...string) *Stack {
	t.Helper()
	return newStack(t, bin, false, "", edgeArgs)
}

// NewWebSocketStack is NewStack with the tunnel in a WebSocket on the
// edge's https listener (HTTPSPort) instead of on its tunnel port:
// trusted's fence lets out only connections to the DMZ's port 443, the
// DMZ's fence drops its tunnel port, the keyfile carries WebSocketEdge,
// and the connector trusts the listener's certificate (--websocket-ca).
func NewWebSocketStack(t testing.TB, bin string, edgeArgs ...string) *Stack {
	t.Helper()
	return newStack(t, bin, true, "", edgeArgs)
}

// NewProxyStack is NewWebSocketStack behind a proxy host (AddProxyHost)
// that runs the proxy of scheme, one of ProxySchemes, with its
// credentials: the firewalls are FenceThroughProxy's, so trusted's only
// way out is the proxy and the proxy's the only way to the edge's
// HTTPSPort, and the connector is given --proxy Proxy.URL(realproxy.User,
// realproxy.Password).
func NewProxyStack(t testing.TB, bin, scheme string, edgeArgs ...string) *Stack {
	t.Helper()
	return newStack(t, bin, true, scheme, edgeArgs)
}

func newStack(t testing.TB, bin string, websocket bool, proxy string, edgeArgs []string) *Stack {
	t.Helper()
	tools := BackendTools
	if proxy != "" {
		tools = append(slices.Clone(tools), realproxy.Tools...)
	}
	SkipIfMissing(t, Missing(tools...))
	s := &Stack{Topo: New(t), Bin: bin, scratch: t.TempDir(), edgeArgs: edgeArgs}
	var https string
	if websocket {
		if proxy != "" {
			s.Proxy = startProxy(t, s.Topo.AddProxyHost(t), proxy)
			s.Topo.FenceThroughProxy(t, PublicPorts)
		} else {
			s.Topo.Fence(t, HTTPSPort, PublicPorts)
		}
		certFile, keyFile, caFile := writeHTTPSCert(t, t.TempDir(), DMZTrustedAddr, DMZOutsideAddr)
		https = fmt.Sprintf("  - kind: https\n    listen: \":%d\"\n    certificates:\n      - {cert: %s, key: %s}\n", HTTPSPort, certFile, keyFile)
		s.connectorArgs = []string{"--websocket-ca", caFile}
		if proxy != "" {
			s.connectorArgs = append(s.connectorArgs, "--proxy", s.Proxy.URL(realproxy.User, realproxy.Password))
		}
		s.keyfileArgs = []string{"--edge", WebSocketEdge}
	} else {
		s.Topo.Fence(t, TunnelPort, PublicPorts)
	}
	tr := s.Topo.Trusted
	s.HTTP = StartHTTP(t, tr, BackendHTTPPort, BigFileSize, HugeFileSize)
	s.Redis = StartRedis(t, tr, BackendRedisPort)
	s.SSHD = StartSSHD(t, tr, BackendSSHPort)

	s.EdgeData = t.TempDir()
	s.edgeConfig = filepath.Join(t.TempDir(), "edge.yaml")
	writeFile(t, s.edgeConfig, []byte(fmt.Sprintf(`listeners:
  - kind: http
    listen: ":%d"
%sservices:
  wiki:
    hosts: [%s]
`, HTTPPort, https, WikiHost)), 0o600)
	s.Edge = s.startEdge(t)
	s.ConnectorData = t.TempDir()
	s.Connector = s.EnrollConnector(t, "trusted-site", s.ConnectorData)
	s.Connector.Log.WaitFor(t, 30*time.Second, 1, "tunnel up")
	s.Edge.Log.WaitFor(t, 10*time.Second, 1, "connector tunnel up")
	return s
}

// EnrollConnector starts a connector in trusted on the data directory
// data with a new keyfile named name, granted Services, which it redeems:
// it enrolls, then opens its tunnel. The caller waits for that. The
// connector ends with t (its cleanup kills it), as RestartConnector's does.
// extra flags follow the stack's own (a later value of a flag wins).
func (s *Stack) EnrollConnector(t testing.TB, name, data string, extra ...string) *Process {
	t.Helper()
	keyfile := s.CreateKeyfile(t, name, Services...)
	// The keyfile travels to the connector's host as an operator would
	// copy it: a file of its own there, mode 0600.
	connKeyfile := filepath.Join(t.TempDir(), name+".keyfile")
	writeFile(t, connKeyfile, keyfile, 0o600)
	return s.startConnector(t, data, append([]string{"--keyfile", connKeyfile}, extra...)...)
}

func (s *Stack) startEdge(t testing.TB) *Process {
	t.Helper()
	p := s.Topo.DMZ.Start(t, "edge", append([]string{s.Bin, "edge",
		"--config", s.edgeConfig,
		"--data", s.EdgeData,
		"--tunnel-listen", ":" + strconv.Itoa(TunnelPort),
		"--advertise", net.JoinHostPort(DMZTrustedAddr, strconv.Itoa(TunnelPort)),
		"--expose", fmt.Sprintf("web=:%d", WebPort),
		"--expose", fmt.Sprintf("redis=:%d", RedisPort),
		"--expose", fmt.Sprintf("ssh=:%d", SSHPort),
		"--expose", fmt.Sprintf("closed=:%d", ClosedPort),
		"--expose", fmt.Sprintf("probe=:%d", ProbePort),
		"--keepalive-interval", KeepaliveInterval.String(),
		"--keepalive-timeout", KeepaliveTimeout.String(),
		"--drain-timeout", "2s",
		"--log-level", "debug"}, s.edgeArgs...)...)
	s.started = append(s.started, p)
	p.Log.WaitFor(t, 30*time.Second, 1, "edge started")
	return p
}

// startConnector starts a connector in trusted on the data directory
// data, offering the stack's services.
func (s *Stack) startConnector(t testing.TB, data string, extra ...string) *Process {
	t.Helper()
	args := append([]string{s.Bin, "connector",
		"--data", data,
		"--service", fmt.Sprintf("web=127.0.0.1:%d", BackendHTTPPort),
		"--service", fmt.Sprintf("redis=127.0.0.1:%d", BackendRedisPort),
		"--service", fmt.Sprintf("ssh=127.0.0.1:%d", BackendSSHPort),
		"--service", fmt.Sprintf("closed=127.0.0.1:%d", BackendClosedPort),
		"--service", fmt.Sprintf("wiki=127.0.0.1:%d", BackendHTTPPort),
		"--keepalive-interval", KeepaliveInterval.String(),
		"--keepalive-timeout", KeepaliveTimeout.String(),
		"--backoff-max", BackoffMax.String(),
		"--drain-timeout", "2s",
		"--log-level", "debug"}, append(slices.Clone(s.connectorArgs), extra...)...)
	p := s.Topo.Trusted.Start(t, "connector", args...)
	s.started = append(s.started, p)
	return p
}

// Sallyports returns every edge and connector process the stack has
// started, the ended ones too.
func (s *Stack) Sallyports() []*Process { return s.started }

// CreateKeyfile runs `sallyport token create` in the DMZ, against the
// running edge's admin API, and returns the keyfile it writes, which
// grants the connector services.
func (s *Stack) CreateKeyfile(t testing.TB, name string, services ...string) []byte {
	t.Helper()
	b, err := createKeyfile(s.Topo.DMZ, s.Bin, s.EdgeData, name, s.keyfileArgs, services)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// RestartEdge starts the edge again on the same data directory, after the
// old process has ended, and waits until it is serving.
func (s *Stack) RestartEdge(t testing.TB) {
	t.Helper()
	s.Edge.waitEnded(t)
	s.Edge = s.startEdge(t)
}

// RestartConnector starts the connector again on the same data directory,
// without the keyfile: it must come back with the identity it enrolled.
// extra flags follow the stack's own (a later value of a flag wins). The
// new process ends with t: a subtest's t ends it with the subtest.
func (s *Stack) RestartConnector(t testing.TB, extra ...string) {
	t.Helper()
	s.Connector.waitEnded(t)
	s.Connector = s.startConnector(t, s.ConnectorData, extra...)
}

// PublicAddr is the address clients in outside use for a public port.
func PublicAddr(port int) string { return net.JoinHostPort(DMZOutsideAddr, strconv.Itoa(port)) }

// Outside runs a client command in outside, bounded by timeout.
func (s *Stack) Outside(timeout time.Duration, argv ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return s.Topo.Outside.Run(ctx, argv...)
}
