package config

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/sallyport/sallyport/internal/wire"
	"github.com/sallyport/sallyport/internal/wstunnel"
)

// Log configures the process's structured log.
type Log struct {
	// Format is "text" or "json"; empty means text.
	Format string `yaml:"format"`
	// Level is "debug", "info", "warn" or "error"; empty means info.
	Level string `yaml:"level"`
}

func (l *Log) applyDefaults() {
	if l.Format == "" {
		l.Format = DefaultLogFormat
	}
	if l.Level == "" {
		l.Level = DefaultLogLevel
	}
}

// Edge is the configuration of the edge, the role that runs in the DMZ and is
// the only one that listens. Zero durations and empty addresses mean the
// defaults that ApplyDefaults fills in; DataDir has none.
type Edge struct {
	// DataDir holds the edge's CA, certificates, admin token and state.
	// Required.
	DataDir string `yaml:"data_dir"`
	// Tunnel is where connectors dial in.
	Tunnel EdgeTunnel `yaml:"tunnel"`
	// Admin is the admin API and dashboard.
	Admin Admin `yaml:"admin"`
	// DrainTimeout is how long live connections may run on after SIGTERM;
	// zero means 30s.
	DrainTimeout time.Duration `yaml:"drain_timeout"`
	// Log configures logging.
	Log Log `yaml:"log"`
	// Audit configures the audit trail in the store.
	Audit Audit `yaml:"audit"`
	// Store says where the shared state lives: the embedded NATS server
	// (the default) or an external NATS cluster.
	Store Store `yaml:"store"`
	// Cluster makes the embedded NATS server one member of a cluster of
	// edges (and witnesses); empty means a single edge.
	Cluster Cluster `yaml:"cluster"`
	// Limits bound what clients can make the edge hold.
	Limits Limits `yaml:"limits"`
	// ConnectorCertificateTTL is how long a connector certificate the edge
	// issues (at enrollment or renewal) is valid; zero means 168h (7
	// days). A connector renews it online once two thirds have passed.
	ConnectorCertificateTTL time.Duration `yaml:"connector_certificate_ttl"`
	// Listeners are public listeners shared by many services (http, https,
	// tls, socks5); see Listener.
	Listeners []Listener `yaml:"listeners"`
	// Services are the services clients may reach, by name; a client that
	// reaches one is carried to a connector offering that service.
	Services map[string]EdgeService `yaml:"services"`

	// Origin says where each value came from, for messages; it is not read
	// from YAML.
	Origin Origin `yaml:"-"`
}

// Audit configures the audit trail: enrollments, grants, revocations,
// refused hellos and admin calls, kept in the edge's store.
type Audit struct {
	// Retention is how long events are kept; zero means 2160h (90 days).
	Retention time.Duration `yaml:"retention"`
}

// Store names an external NATS cluster holding the edge's shared state
// (tokens, connectors, sessions, membership, audit). Empty URL means the
// embedded NATS server, alone or in a Cluster.
type Store struct {
	// URL lists the external NATS servers, e.g.
	// "tls://n1:4222,tls://n2:4222". The servers must run JetStream.
	URL string `yaml:"url"`
	// CA is a PEM file of the CAs that sign the NATS servers'
	// certificates; empty means the system's roots.
	CA string `yaml:"ca"`
	// Cert and Key are a PEM client certificate and key for NATS servers
	// that require mutual TLS; both or neither.
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	// Credentials is a NATS .creds file (a user JWT and its nkey seed).
	Credentials string `yaml:"credentials"`
	// Replicas is how many copies of each bucket and stream JetStream
	// keeps: 1 or 3; zero means 3 when the cluster has three or more
	// JetStream servers and 1 otherwise.
	Replicas int `yaml:"replicas"`
}

// Cluster configures the embedded NATS server's cluster port, on which
// edges and witnesses (and nothing else) connect to each other, with
// mutual TLS from the edge CA.
type Cluster struct {
	// Listen is the cluster port's listen address, e.g. ":6222"; empty
	// means no cluster (a single edge).
	Listen string `yaml:"listen"`
	// Advertise is the host:port the other members dial to reach this
	// one; empty means derived from Listen as tunnel.advertise is.
	Advertise string `yaml:"advertise"`
	// Routes are the other members' cluster addresses (host:port). A
	// join keyfile supplies them too; members learn the rest from each
	// other.
	Routes []string `yaml:"routes"`
}

// Limits bound the client connections the edge holds. Each tunneled
// connection may buffer its stream's window at the edge when its client
// does not read: 256 KiB, and more only within the tunnel's receive budget
// (tunnel.receive_budget_mib), so MaxClients bounds that memory too.
type Limits struct {
	// MaxClients bounds the client connections of every public listener
	// together; zero means 4096.
	MaxClients int `yaml:"max_clients"`
	// MaxClientsPerSource bounds those from one IP address; zero means 256.
	MaxClientsPerSource int `yaml:"max_clients_per_source"`
}

// The defaults of Limits.
const (
	DefaultMaxClients          = 4096
	DefaultMaxClientsPerSource = 256
)

// Bounds and default of Edge.ConnectorCertificateTTL. The lower bound
// only keeps renewal meaningful; below an hour or so, a connector that is
// offline for a little while must enroll again.
const (
	DefaultConnectorCertificateTTL = 7 * 24 * time.Hour
	MinConnectorCertificateTTL     = time.Second
	MaxConnectorCertificateTTL     = 365 * 24 * time.Hour
)

// DefaultAuditRetention is Audit.Retention's default: 90 days.
const DefaultAuditRetention = 90 * 24 * time.Hour

// EdgeTunnel configures the listener that connectors dial.
type EdgeTunnel struct {
	// Listen is the tunnel's listen address; empty means ":5500".
	Listen string `yaml:"listen"`
	// Advertise lists the addresses written into keyfiles for connectors
	// to dial: host:port of the tunnel port, or wss://HOST[:PORT]/PATH of
	// an https listener; empty lets the edge derive them.
	Advertise []string `yaml:"advertise"`
	// KeepaliveInterval is how often an idle tunnel is probed; zero means 5s.
	KeepaliveInterval time.Duration `yaml:"keepalive_interval"`
	// KeepaliveTimeout is how long a tunnel may go unanswered before it is
	// closed as dead; zero means 15s. It must exceed KeepaliveInterval.
	KeepaliveTimeout time.Duration `yaml:"keepalive_timeout"`
	// AnswerTimeout is how long the edge waits for a connector to answer
	// a new stream (it answers once it has dialed the back-end) before it
	// tells the client the service is unavailable; zero means 15s.
	AnswerTimeout time.Duration `yaml:"answer_timeout"`
	// ReceiveBudgetMiB bounds, in MiB, how far the streams of one tunnel
	// may grow their receive windows together: what clients that stop
	// reading can make the edge hold beyond 256 KiB a stream; zero means
	// 64. Within it a stream's window grows to what its link needs (up
	// to 32 MiB); past it, windows stop growing, and no stream waits for
	// another.
	ReceiveBudgetMiB int `yaml:"receive_budget_mib"`
	// OpeningsPerSource bounds the tunnel-port connections from one
	// source address that may be in their opening (TLS handshake and
	// first message) at once; at the bound the oldest is shed. Zero
	// means 32. Raise it for sites where many connectors share one
	// address (NAT): at an edge's return they all dial at once.
	OpeningsPerSource int `yaml:"openings_per_source"`
}

// Bounds of the tunnel port's openings: TunnelOpenings in all (the
// oldest shed beyond), and EdgeTunnel.OpeningsPerSource's default.
const (
	TunnelOpenings           = 1024
	DefaultOpeningsPerSource = 32
)

// DefaultAnswerTimeout is EdgeTunnel.AnswerTimeout's default.
const DefaultAnswerTimeout = 15 * time.Second

// Bounds and default of EdgeTunnel.ReceiveBudgetMiB.
const (
	DefaultReceiveBudgetMiB = 64
	MaxReceiveBudgetMiB     = 64 << 10
)

// Admin configures the admin API.
type Admin struct {
	// Listen is the admin API's listen address; empty means
	// "127.0.0.1:5501". It must be loopback unless AllowRemote is set.
	Listen string `yaml:"listen"`
	// AllowRemote permits a Listen address that is not loopback.
	AllowRemote bool `yaml:"allow_remote"`
	// HealthListen, when set, is a listen address that serves only the
	// probes GET /livez and GET /readyz, for a balancer that cannot reach
	// the admin API's loopback address; it may be on any interface, as
	// the probes say only "ok" or why not. Empty means none.
	HealthListen string `yaml:"health_listen"`
}

// EdgeService is one service the edge carries to connectors, and how
// clients reach it.
type EdgeService struct {
	// Listen is the service's own public TCP listen address, such as
	// ":15432"; port 0 picks a free port. It may be empty when Hosts, SNI,
	// a socks5 listener or a WebSocket edge host reach the service; it then
	// has no port of its own, so every client passes a shared listener.
	Listen string `yaml:"listen"`
	// Hosts are the HTTP host names (exact, or "*.example.com" for every
	// name one label below) that http and https listeners route here.
	Hosts []string `yaml:"hosts"`
	// SNI are the TLS server names (exact or "*.example.com") that tls
	// listeners pass through here undecrypted.
	SNI []string `yaml:"sni"`
	// Policy says which clients may reach the service; the zero value lets
	// every client in.
	Policy Policy `yaml:"policy"`
}

// ReadEdge decodes an edge config from r strictly, without applying defaults
// or validating; name is the file name used in messages. It returns an error
// only when the document cannot be read at all (syntax, size, several
// documents); problems with single keys are kept in the result's Origin and
// reported by Validate, so that a caller can lay flags over the file first
// and still report every problem at once.
func ReadEdge(r io.Reader, name string) (Edge, error) {
	var e Edge
	var origin Origin
	err := readInto(r, name, &e, &origin)
	e.Origin = origin
	return e, err
}

// DecodeEdge reads an edge config from r, applies defaults and validates it;
// name is the file name used in messages.
func DecodeEdge(r io.Reader, name string) (Edge, error) {
	e, err := ReadEdge(r, name)
	if err != nil {
		return Edge{}, err
	}
	e.ApplyDefaults()
	if err := e.Validate(); err != nil {
		return Edge{}, err
	}
	return e, nil
}

// LoadEdge reads the edge config file at path, applies defaults and
// validates it. Problems are reported with path as the file name.
func LoadEdge(path string) (Edge, error) {
	f, err := os.Open(path)
	if err != nil {
		return Edge{}, fmt.Errorf("load edge config: %w", err)
	}
	defer f.Close()
	return DecodeEdge(f, path)
}

// ApplyDefaults fills every unset field that has a default. It changes
// service entries in place in the Services map, which copies of e share.
func (e *Edge) ApplyDefaults() {
	if e.Tunnel.Listen == "" {
		e.Tunnel.Listen = DefaultTunnelListen
	}
	if e.Tunnel.KeepaliveInterval == 0 {
		e.Tunnel.KeepaliveInterval = DefaultKeepaliveInterval
	}
	if e.Tunnel.KeepaliveTimeout == 0 {
		e.Tunnel.KeepaliveTimeout = DefaultKeepaliveTimeout
	}
	if e.Admin.Listen == "" {
		e.Admin.Listen = DefaultAdminListen
	}
	if e.DrainTimeout == 0 {
		e.DrainTimeout = DefaultDrainTimeout
	}
	if e.Tunnel.AnswerTimeout == 0 {
		e.Tunnel.AnswerTimeout = DefaultAnswerTimeout
	}
	if e.Tunnel.ReceiveBudgetMiB == 0 {
		e.Tunnel.ReceiveBudgetMiB = DefaultReceiveBudgetMiB
	}
	if e.Tunnel.OpeningsPerSource == 0 {
		e.Tunnel.OpeningsPerSource = DefaultOpeningsPerSource
	}
	if e.Audit.Retention == 0 {
		e.Audit.Retention = DefaultAuditRetention
	}
	if e.Limits.MaxClients == 0 {
		e.Limits.MaxClients = DefaultMaxClients
	}
	if e.Limits.MaxClientsPerSource == 0 {
		e.Limits.MaxClientsPerSource = DefaultMaxClientsPerSource
	}
	if e.ConnectorCertificateTTL == 0 {
		e.ConnectorCertificateTTL = DefaultConnectorCertificateTTL
	}
	e.Log.applyDefaults()
}

// Validate reports every problem with e, including those found while
// reading it, as a Problems in file order; nil when there are none. Call it
// after ApplyDefaults: unset durations and addresses are errors here.
func (e Edge) Validate() error {
	c := checker{origin: e.Origin}
	if e.DataDir == "" {
		c.require("", "data_dir", "the directory where the edge keeps its CA, certificates and state")
	}
	var ls []listener
	c.listenAddr("tunnel.listen", e.Tunnel.Listen, &ls)
	for i, a := range e.Tunnel.Advertise {
		if wstunnel.IsAddress(a) {
			if _, err := wstunnel.ParseAddress(a); err != nil {
				c.add(fmt.Sprintf("tunnel.advertise[%d]", i), "%s", err.Error())
			}
			continue
		}
		if msg := checkAddr(a, dialAddr); msg != "" {
			c.add(fmt.Sprintf("tunnel.advertise[%d]", i), "%s", msg)
		}
	}
	c.keepalive("tunnel", e.Tunnel.KeepaliveInterval, e.Tunnel.KeepaliveTimeout)
	c.positive("tunnel.answer_timeout", e.Tunnel.AnswerTimeout)
	if b := e.Tunnel.ReceiveBudgetMiB; b < 1 || b > MaxReceiveBudgetMiB {
		c.add("tunnel.receive_budget_mib", "must be 1 to %d (got %d)", MaxReceiveBudgetMiB, b)
	}
	if n := e.Tunnel.OpeningsPerSource; n < 1 || n > TunnelOpenings {
		c.add("tunnel.openings_per_source", "must be 1 to %d, the openings the edge holds in all (got %d)", TunnelOpenings, n)
	}
	if c.listenAddr("admin.listen", e.Admin.Listen, &ls) && !e.Admin.AllowRemote && !isLoopback(e.Admin.Listen) {
		c.add("admin.listen", "%q is not a loopback address; the admin API stays on loopback unless admin.allow_remote is true", e.Admin.Listen)
	}
	if e.Admin.HealthListen != "" {
		c.listenAddr("admin.health_listen", e.Admin.HealthListen, &ls)
	}
	c.positive("drain_timeout", e.DrainTimeout)
	if e.Audit.Retention < time.Hour {
		c.add("audit.retention", "%s is too short; keep the audit trail at least 1h (default 2160h, 90 days)", e.Audit.Retention)
	}
	if ttl := e.ConnectorCertificateTTL; ttl < MinConnectorCertificateTTL || ttl > MaxConnectorCertificateTTL {
		c.add("connector_certificate_ttl", "%s is out of range: use %s to %s (default 168h, 7 days)", ttl, MinConnectorCertificateTTL, "8760h")
	}
	c.log(e.Log)
	c.store(e.Store, e.Cluster, &ls)
	if e.Limits.MaxClients < 1 {
		c.add("limits.max_clients", "must be at least 1 (got %d)", e.Limits.MaxClients)
	}
	if e.Limits.MaxClientsPerSource < 1 || e.Limits.MaxClientsPerSource > e.Limits.MaxClients {
		c.add("limits.max_clients_per_source", "must be 1 to limits.max_clients (%d) (got %d)", e.Limits.MaxClients, e.Limits.MaxClientsPerSource)
	}
	c.listenersAndRoutes(e, &ls)
	for _, name := range inFileOrder(e.Origin, e.Services) {
		c.serviceName(name)
		key := "services." + name
		if e.Services[name].Listen == "" {
			if !e.reachable(e.Services[name]) {
				c.require(key, "listen", "the public address clients connect to, e.g. :15432")
			}
			continue
		}
		c.listenAddr(key+".listen", e.Services[name].Listen, &ls)
	}
	c.listeners(ls)
	return c.result()
}

// store checks the Store and Cluster sections.
func (c *checker) store(s Store, cl Cluster, ls *[]listener) {
	if s.URL != "" && cl.Listen != "" {
		c.add("cluster.listen", "an edge on an external NATS (store.url) runs no embedded server to cluster; remove one of the two")
	}
	if s.URL == "" {
		for _, k := range []struct{ key, v string }{{"store.ca", s.CA}, {"store.cert", s.Cert}, {"store.key", s.Key}, {"store.credentials", s.Credentials}} {
			if k.v != "" {
				c.add(k.key, "is for an external NATS; set store.url too, or remove it")
			}
		}
	}
	if (s.Cert == "") != (s.Key == "") {
		c.add("store.cert", "store.cert and store.key go together: set both or neither")
	}
	if s.Replicas != 0 && s.Replicas != 1 && s.Replicas != 3 {
		c.add("store.replicas", "must be 1 or 3 (got %d); 0 picks 3 when the cluster has three JetStream servers", s.Replicas)
	}
	if cl.Listen == "" {
		if cl.Advertise != "" || len(cl.Routes) > 0 {
			c.add("cluster.listen", "cluster.advertise and cluster.routes need cluster.listen, the cluster port")
		}
		return
	}
	c.listenAddr("cluster.listen", cl.Listen, ls)
	if cl.Advertise != "" {
		if msg := checkAddr(cl.Advertise, dialAddr); msg != "" {
			c.add("cluster.advertise", "%s", msg)
		}
	}
	for i, r := range cl.Routes {
		if msg := checkAddr(r, dialAddr); msg != "" {
			c.add(fmt.Sprintf("cluster.routes[%d]", i), "%s", msg)
		}
	}
}

// listenAddr checks a required listen address and, when it is valid, adds it
// to ls for the shared-socket check.
func (c *checker) listenAddr(key, addr string, ls *[]listener) bool {
	if addr == "" {
		c.require(parentPath(key), key[strings.LastIndexByte(key, '.')+1:], "a listen address such as :5500")
		return false
	}
	if msg := checkAddr(addr, listenAddr); msg != "" {
		c.add(key, "%s", msg)
		return false
	}
	*ls = append(*ls, listener{key: key, addr: addr})
	return true
}

// ParseExpose parses the value of the --expose flag, NAME=ADDRESS such as
// "db=:15432", into a service name and its public listener. Its errors are
// Problems that name the flag.
func ParseExpose(s string) (string, EdgeService, error) {
	name, addr, err := parseFlagPair("--expose", "db=:15432", s, listenAddr)
	return name, EdgeService{Listen: addr}, err
}

// parseFlagPair splits and checks a NAME=ADDRESS flag value.
func parseFlagPair(flag, example, s string, use addrUse) (string, string, error) {
	fail := func(format string, args ...any) (string, string, error) {
		return "", "", Problem{Flag: flag, Msg: fmt.Sprintf(format, args...)}
	}
	name, addr, ok := strings.Cut(s, "=")
	if !ok || name == "" || addr == "" {
		return fail("wants NAME=ADDRESS, e.g. %s (got %q)", example, s)
	}
	if !wire.ValidName(name) {
		return fail("%q: invalid service name %q (%s)", s, name, wire.NameRule)
	}
	if msg := checkAddr(addr, use); msg != "" {
		return fail("%q: %s", s, msg)
	}
	return name, addr, nil
}
