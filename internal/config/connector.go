package config

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/sallyport/sallyport/internal/egress"
	"github.com/sallyport/sallyport/internal/wire"
	"github.com/sallyport/sallyport/internal/wstunnel"
)

// Connector is the configuration of the connector, the role that runs in
// the trusted network, dials out to the edges and never listens. Its
// Services are the allow-list: the only back-ends it will ever dial. Zero
// durations mean the defaults that ApplyDefaults fills in.
type Connector struct {
	// Keyfile is the enrollment keyfile issued by the edge. It is needed on
	// the first run only, while DataDir holds no identity yet, so it is not
	// required here.
	Keyfile string `yaml:"keyfile"`
	// DataDir holds the connector's key, certificate and pinned edge CA.
	// Required.
	DataDir string `yaml:"data_dir"`
	// Edges, when set, replaces the keyfile's edge addresses (host:port of
	// a tunnel port, or wss://HOST[:PORT]/PATH of an https listener).
	// The connector keeps a tunnel to each of these whatever the cluster
	// announces; it adds the edges the cluster announces.
	Edges []string `yaml:"edges"`
	// Tunnel tunes the tunnels to the edges.
	Tunnel ConnectorTunnel `yaml:"tunnel"`
	// DrainTimeout is how long live streams may run on after SIGTERM; zero
	// means 30s.
	DrainTimeout time.Duration `yaml:"drain_timeout"`
	// Log configures logging.
	Log Log `yaml:"log"`
	// Health is the probes' listener; off unless set.
	Health ConnectorHealth `yaml:"health"`
	// Metrics is the listener of GET /metrics (Prometheus); off unless
	// set, loopback unless allowed.
	Metrics ConnectorMetrics `yaml:"metrics"`
	// Services are the back-ends the edge may ask for, by service name. At
	// least one is required.
	Services map[string]ConnectorService `yaml:"services"`

	// Origin says where each value came from, for messages; it is not read
	// from YAML.
	Origin Origin `yaml:"-"`
}

// ConnectorTunnel tunes the connector's tunnels to the edges.
type ConnectorTunnel struct {
	// KeepaliveInterval is how often an idle tunnel is probed; zero means 5s.
	KeepaliveInterval time.Duration `yaml:"keepalive_interval"`
	// KeepaliveTimeout is how long a tunnel may go unanswered before it is
	// redialled; zero means 15s. It must exceed KeepaliveInterval.
	KeepaliveTimeout time.Duration `yaml:"keepalive_timeout"`
	// DialTimeout bounds one dial and TLS handshake to an edge; zero means 10s.
	DialTimeout time.Duration `yaml:"dial_timeout"`
	// BackoffMin is the first wait before redialling; zero means 250ms.
	BackoffMin time.Duration `yaml:"backoff_min"`
	// BackoffMax caps the wait between redials; zero means 30s. It must be at
	// least BackoffMin.
	BackoffMax time.Duration `yaml:"backoff_max"`
	// JoinSpread is the longest wait before the first dial to an edge
	// that the cluster announces: each connector waits a uniform random
	// time up to it, so that thousands of connectors do not hit a new
	// edge at once. Zero means 30s.
	JoinSpread time.Duration `yaml:"join_spread"`
	// LeaveGrace is how long an edge may be missing from the announced
	// set before the connector stops its tunnel to it (edges listed in
	// Edges are always kept). Zero means 30s.
	LeaveGrace time.Duration `yaml:"leave_grace"`
	// MaxEdges, when set, keeps tunnels to that many edges of the
	// announced set only (K), chosen by rendezvous hashing on the
	// connector's id so that connectors spread evenly and each keeps its
	// choice while the set is stable; zero means every edge (needed for
	// any edge behind a plain L4 balancer to serve every client). Edges
	// listed in Edges are kept besides.
	MaxEdges int `yaml:"max_edges"`
	// Pool is how many tunnel connections to keep to each edge; streams
	// are spread over them, and so over the edge's and the connector's
	// cores. Zero means 1; at most MaxPool.
	Pool int `yaml:"pool"`
	// ReceiveBudgetMiB bounds, in MiB, how far the streams of one tunnel
	// may grow their receive windows together: what back-ends that stop
	// reading can make the connector hold beyond 256 KiB a stream; zero
	// means 64 (as the edge's tunnel.receive_budget_mib).
	ReceiveBudgetMiB int `yaml:"receive_budget_mib"`
	// Proxy is the proxy the connector reaches the edges through:
	// http://[USER:PASSWORD@]HOST:PORT (HTTP CONNECT), socks5://… (the
	// edge's name resolved here) or socks5h://… (resolved by the proxy).
	// "direct" dials the edges directly whatever the environment says;
	// empty means the environment's HTTPS_PROXY, ALL_PROXY and NO_PROXY.
	// Back-ends are always dialled directly.
	Proxy string `yaml:"proxy"`
	// WebSocketCA is a PEM file of the CA certificates that issue the
	// certificate of the edge's https listener, for edges dialled at a
	// wss:// address (the outer TLS; the tunnel's own TLS inside is pinned
	// to the edge's CA as always). Empty means the system's roots.
	WebSocketCA string `yaml:"websocket_ca"`
}

// ConnectorHealth configures the connector's probes, GET /livez and
// GET /readyz (ready: at least one tunnel up).
type ConnectorHealth struct {
	// Listen is where the probes listen; empty means nowhere (the
	// connector listens on nothing by default). It must be loopback
	// unless AllowRemote is set.
	Listen string `yaml:"listen"`
	// AllowRemote permits a Listen address that is not loopback.
	AllowRemote bool `yaml:"allow_remote"`
}

// ConnectorMetrics configures the connector's own Prometheus metrics,
// GET /metrics, under the same rules as its probes: off unless Listen is
// set, and on loopback unless AllowRemote (they name its services and
// edges, and take no token).
type ConnectorMetrics = ConnectorHealth

// ProxyDirect, as tunnel.proxy, dials the edges directly whatever the
// environment's proxy variables say.
const ProxyDirect = "direct"

// MaxPool bounds tunnel.pool.
const MaxPool = 16

// ConnectorService is one back-end the connector allows.
type ConnectorService struct {
	// Address is the back-end's host:port. Required.
	Address string `yaml:"address"`
	// DialTimeout bounds the dial to the back-end; zero means 5s.
	DialTimeout time.Duration `yaml:"dial_timeout"`
	// ProxyProtocol, v1 or v2, makes the connector send a PROXY protocol
	// header with the client's address first on each back-end connection;
	// empty sends none.
	ProxyProtocol string `yaml:"proxy_protocol"`
}

// ReadConnector decodes a connector config from r strictly, without applying
// defaults or validating, in the way ReadEdge does for the edge.
func ReadConnector(r io.Reader, name string) (Connector, error) {
	var c Connector
	var origin Origin
	err := readInto(r, name, &c, &origin)
	c.Origin = origin
	return c, err
}

// DecodeConnector reads a connector config from r, applies defaults and
// validates it; name is the file name used in messages.
func DecodeConnector(r io.Reader, name string) (Connector, error) {
	c, err := ReadConnector(r, name)
	if err != nil {
		return Connector{}, err
	}
	c.ApplyDefaults()
	if err := c.Validate(); err != nil {
		return Connector{}, err
	}
	return c, nil
}

// LoadConnector reads the connector config file at path, applies defaults
// and validates it. Problems are reported with path as the file name.
func LoadConnector(path string) (Connector, error) {
	f, err := os.Open(path)
	if err != nil {
		return Connector{}, fmt.Errorf("load connector config: %w", err)
	}
	defer f.Close()
	return DecodeConnector(f, path)
}

// ApplyDefaults fills every unset field that has a default. It changes
// service entries in place in the Services map, which copies of c share.
func (c *Connector) ApplyDefaults() {
	t := &c.Tunnel
	if t.KeepaliveInterval == 0 {
		t.KeepaliveInterval = DefaultKeepaliveInterval
	}
	if t.KeepaliveTimeout == 0 {
		t.KeepaliveTimeout = DefaultKeepaliveTimeout
	}
	if t.DialTimeout == 0 {
		t.DialTimeout = DefaultTunnelDialTimeout
	}
	if t.BackoffMin == 0 {
		t.BackoffMin = DefaultBackoffMin
	}
	if t.BackoffMax == 0 {
		t.BackoffMax = DefaultBackoffMax
	}
	if t.Pool == 0 {
		t.Pool = 1
	}
	if t.JoinSpread == 0 {
		t.JoinSpread = DefaultJoinSpread
	}
	if t.LeaveGrace == 0 {
		t.LeaveGrace = DefaultLeaveGrace
	}
	if t.ReceiveBudgetMiB == 0 {
		t.ReceiveBudgetMiB = DefaultReceiveBudgetMiB
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = DefaultDrainTimeout
	}
	c.Log.applyDefaults()
	for name, s := range c.Services {
		if s.DialTimeout == 0 {
			s.DialTimeout = DefaultServiceDial
			c.Services[name] = s
		}
	}
}

// Validate reports every problem with c, including those found while
// reading it, as a Problems in file order; nil when there are none. Call it
// after ApplyDefaults: unset durations are errors here.
func (c Connector) Validate() error {
	k := checker{origin: c.Origin}
	if c.DataDir == "" {
		k.require("", "data_dir", "the directory where the connector keeps its key and certificate")
	}
	for i, a := range c.Edges {
		if wstunnel.IsAddress(a) {
			if _, err := wstunnel.ParseAddress(a); err != nil {
				k.add(fmt.Sprintf("edges[%d]", i), "%s", err.Error())
			}
			continue
		}
		if msg := checkAddr(a, dialAddr); msg != "" {
			k.add(fmt.Sprintf("edges[%d]", i), "%s", msg)
		}
	}
	t := c.Tunnel
	k.keepalive("tunnel", t.KeepaliveInterval, t.KeepaliveTimeout)
	k.positive("tunnel.dial_timeout", t.DialTimeout)
	k.positive("tunnel.backoff_min", t.BackoffMin)
	k.positive("tunnel.backoff_max", t.BackoffMax)
	k.positive("tunnel.join_spread", t.JoinSpread)
	k.positive("tunnel.leave_grace", t.LeaveGrace)
	if t.MaxEdges < 0 || t.MaxEdges > wire.MaxEdges {
		k.add("tunnel.max_edges", "must be 0 (every edge) to %d (got %d)", wire.MaxEdges, t.MaxEdges)
	}
	if t.BackoffMin > 0 && t.BackoffMax > 0 && t.BackoffMax < t.BackoffMin {
		k.add("tunnel.backoff_max", "must be at least backoff_min (got %s, backoff_min %s)", t.BackoffMax, t.BackoffMin)
	}
	if b := t.ReceiveBudgetMiB; b < 1 || b > MaxReceiveBudgetMiB {
		k.add("tunnel.receive_budget_mib", "must be 1 to %d (got %d)", MaxReceiveBudgetMiB, b)
	}
	if t.Pool < 1 || t.Pool > MaxPool {
		k.add("tunnel.pool", "must be 1 to %d tunnels per edge (got %d)", MaxPool, t.Pool)
	}
	if t.Proxy != "" && t.Proxy != ProxyDirect {
		if _, err := egress.ParseProxy(t.Proxy); err != nil {
			k.add("tunnel.proxy", "%v (or %q to ignore the environment)", err, ProxyDirect)
		}
	}
	k.positive("drain_timeout", c.DrainTimeout)
	k.log(c.Log)
	k.localListener("health", c.Health)
	k.localListener("metrics", c.Metrics)
	if len(c.Services) == 0 {
		k.require("", "services", "at least one service (the connector dials only the back-ends listed here)")
	}
	for _, name := range inFileOrder(c.Origin, c.Services) {
		k.serviceName(name)
		key := "services." + name
		s := c.Services[name]
		if s.Address == "" {
			k.require(key, "address", "the back-end's host:port, e.g. 127.0.0.1:5432")
		} else if msg := checkAddr(s.Address, dialAddr); msg != "" {
			k.add(key+".address", "%s", msg)
		}
		k.positive(key+".dial_timeout", s.DialTimeout)
		k.checkProxyProtocol(key+".proxy_protocol", s.ProxyProtocol)
	}
	return k.result()
}

// localListener checks one of the connector's own listeners (section
// names its keys): off, or a listen address on loopback unless
// allow_remote.
func (k *checker) localListener(section string, l ConnectorHealth) {
	if l.Listen == "" {
		return
	}
	if msg := checkAddr(l.Listen, listenAddr); msg != "" {
		k.add(section+".listen", "%s", msg)
	} else if !l.AllowRemote && !isLoopback(l.Listen) {
		k.add(section+".listen", "%q is not a loopback address; the connector listens on loopback only, unless %s.allow_remote is true", l.Listen, section)
	}
}

// ParseService parses the value of the --service flag, NAME=ADDRESS such as
// "db=127.0.0.1:5432", into a service name and the back-end it allows (with
// no dial timeout: ApplyDefaults sets it). Its errors are Problems that name
// the flag.
func ParseService(s string) (string, ConnectorService, error) {
	name, addr, err := parseFlagPair("--service", "db=127.0.0.1:5432", s, dialAddr)
	return name, ConnectorService{Address: addr}, err
}
