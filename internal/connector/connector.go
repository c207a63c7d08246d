// Package connector is sallyport's trusted-network role. It never listens
// (but for its health probes and metrics, when health.listen and
// metrics.listen ask for them): it dials out to the edge(s), keeps a tunnel to each up with reconnects
// that back off with jitter, and for each stream the edge opens it dials
// the back-end that its own configuration names for the stream's service.
// That configuration is the allow-list: the edge can name a service, never
// an address.
//
//	c, err := connector.New(cfg, logger)
//	err = c.Run(ctx) // enrolls on first run, then serves until ctx ends
package connector

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/egress"
	"github.com/sallyport/sallyport/internal/health"
	"github.com/sallyport/sallyport/internal/loglimit"
	"github.com/sallyport/sallyport/internal/metrics"
	"github.com/sallyport/sallyport/internal/pipe"
	"github.com/sallyport/sallyport/internal/pki"
	"github.com/sallyport/sallyport/internal/tunnel"
	"github.com/sallyport/sallyport/internal/wire"
)

// headerTimeout bounds the wait for a new stream's header.
const headerTimeout = 10 * time.Second

// Connector is one connector process. Create it with New, run it once.
type Connector struct {
	cfg config.Connector
	log *slog.Logger
	// lookupLines bounds the lines about refused address lookups.
	lookupLines loglimit.Limiter
	now         func() time.Time
	instance    string
	// dialer dials the back-ends, always directly.
	dialer net.Dialer
	// edgeDialer reaches the edges: directly or through the proxy
	// that tunnel.proxy or the environment names.
	edgeDialer *egress.Dialer
	// live is the allow-list in force: the config's services at start,
	// then a reload's (reload.go).
	live atomic.Pointer[allowList]
	// offers is closed and replaced when a reload changes the set of
	// services offered: each tunnel then announces the new set on a new
	// tunnel, and the old one finishes its streams (keepTunnel).
	offers struct {
		sync.Mutex
		changed chan struct{}
	}
	// reload serializes reloads; load reads the config again.
	reload struct {
		sync.Mutex
		load func() (config.Connector, error)
	}

	tunnels struct {
		sync.Mutex
		// up holds the live tunnels, by edge address and pool slot.
		up map[string]*tunnel.Session
		// draining is set once Run's context has ended.
		draining bool
		// changed is closed and replaced whenever up changes.
		changed chan struct{}
	}

	// ident holds the certificate new connections are made with; renewal
	// replaces it (live tunnels keep the one they were made with).
	ident struct {
		sync.Mutex
		cert tls.Certificate
	}

	// stop ends Run with an error that retrying would not change (a
	// revocation); set by Run.
	stop context.CancelCauseFunc
	// told holds "edge/service" for each refused offer already logged.
	told sync.Map
	// fleet is the edges the connector keeps tunnels to (members.go).
	fleet fleet

	// healthAddr is health.listen's address, once bound; metricsAddr,
	// metrics.listen's.
	healthAddr, metricsAddr atomic.Pointer[net.Addr]
	// metrics are the connector's Prometheus metrics.
	metrics *metrics.Connector

	streams pipe.Tracker
	// handlers counts stream goroutines.
	handlers sync.WaitGroup
}

// New checks cfg and returns a connector ready to Run. It does no I/O.
func New(cfg config.Connector, log *slog.Logger) (*Connector, error) {
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	b := make([]byte, 6)
	rand.Read(b)
	edgeDialer, err := EdgeDialer(cfg.Tunnel.Proxy)
	if err != nil {
		return nil, err
	}
	c := &Connector{
		cfg:        cfg,
		edgeDialer: edgeDialer,
		log:        log,
		now:        time.Now,
		instance:   hex.EncodeToString(b),
		metrics:    metrics.NewConnector(slices.Collect(maps.Keys(cfg.Services))),
	}
	c.live.Store(newAllowList(cfg.Services))
	c.offers.changed = make(chan struct{})
	c.tunnels.up = make(map[string]*tunnel.Session)
	c.tunnels.changed = make(chan struct{})
	return c, nil
}

// EdgeDialer returns the dialer that reaches the edges for the value of
// tunnel.proxy: a proxy URL, "direct", or empty for the environment's
// HTTPS_PROXY, ALL_PROXY and NO_PROXY.
func EdgeDialer(proxy string) (*egress.Dialer, error) {
	switch proxy {
	case "":
		d, err := egress.FromEnvironment()
		if err != nil {
			return nil, fmt.Errorf("reaching the edges: %w (set tunnel.proxy or --proxy, %q to ignore the environment)", err, config.ProxyDirect)
		}
		return d, nil
	case config.ProxyDirect:
		return &egress.Dialer{}, nil
	}
	u, err := egress.ParseProxy(proxy)
	if err != nil {
		return nil, err
	}
	return &egress.Dialer{Proxy: u}, nil
}

// EdgeDial is how the connector opens a TCP connection to an edge,
// through its proxy if it has one: for transports other than TLS over TCP
// to dial with.
func (c *Connector) EdgeDial(ctx context.Context, network, addr string) (net.Conn, error) {
	return c.edgeDialer.DialContext(ctx, network, addr)
}

// logEgress says, once, how the edges are reached (a password redacted).
func (c *Connector) logEgress() {
	from := "tunnel.proxy"
	switch c.cfg.Tunnel.Proxy {
	case "":
		from = "environment"
	case config.ProxyDirect:
		from = "tunnel.proxy: direct"
	}
	c.log.Info("reaching the edges", "proxy", c.edgeDialer.String(), "from", from)
}

// identity is what the connector needs to open tunnels. Its certificate
// is where it starts; currentCert is what it has now.
type identity struct {
	cert  tls.Certificate
	ca    *x509.Certificate
	pin   string
	edges []string
}

// Run enrolls the connector if its data directory holds no identity yet,
// then keeps a tunnel to every edge until ctx ends. It then answers new
// streams with "draining", lets live ones finish for up to the drain
// timeout, closes the tunnels and returns. An enrollment refusal is
// returned at once: retrying would not change it. So is a revocation: the
// edge refuses the connector from then on, and it stops serving. While it
// runs, it renews its certificate online once two thirds of its lifetime
// have passed; one that has expired (while the connector was offline, say)
// cannot be renewed, and Run returns an error wrapping ErrExpired.
func (c *Connector) Run(parent context.Context) error {
	ctx, stop := context.WithCancelCause(parent)
	defer stop(nil)
	c.stop = stop
	c.logEgress()
	stopHealth, err := c.serveLocal("the health probes", "health.listen", c.cfg.Health.Listen, health.Handler(c.Readiness), &c.healthAddr)
	if err != nil {
		return err
	}
	defer stopHealth()
	mux := http.NewServeMux()
	mux.Handle("GET "+metrics.Path, c.metrics.Handler())
	stopMetrics, err := c.serveLocal("the metrics", "metrics.listen", c.cfg.Metrics.Listen, mux, &c.metricsAddr)
	if err != nil {
		return err
	}
	defer stopMetrics()
	id, err := c.identity(ctx)
	if err != nil {
		return err
	}
	c.setCert(id.cert)
	c.log.Info("connector started", "connector", pki.ConnectorID(id.cert.Leaf), "name", id.cert.Leaf.Subject.CommonName,
		"edges", id.edges, "services", slices.Sorted(maps.Keys(c.cfg.Services)),
		"certificate_expires", id.cert.Leaf.NotAfter, "renew_at", pki.RenewAt(id.cert.Leaf))
	var loops sync.WaitGroup
	loops.Go(func() { c.keepRenewing(ctx, id) })
	c.startFleet(ctx, id)
	// Ready for systemd once enrolled and dialling, not once a tunnel is
	// up: an edge out of reach for longer than the unit's start timeout
	// would otherwise get the connector killed and restarted in a loop,
	// when it should keep redialling. /readyz is what says "tunnel up".
	c.notify("READY=1")
	<-ctx.Done()
	c.notify("STOPPING=1")
	c.tunnels.Lock()
	c.tunnels.draining = true
	c.tunnels.Unlock()
	c.log.Info("connector stopping: refusing new streams; draining live ones", "timeout", c.cfg.DrainTimeout)
	if n := c.streams.Wait(c.cfg.DrainTimeout); n > 0 {
		c.log.Warn("drain timeout: closing streams still open", "count", n)
	}
	c.closeTunnels()
	loops.Wait()
	c.waitFleet()
	c.handlers.Wait()
	if err := context.Cause(ctx); parent.Err() == nil && err != nil {
		c.log.Error("connector stopped", "err", err)
		return err
	}
	c.log.Info("connector stopped")
	return nil
}

// identity loads the connector's certificate from its data directory, or
// enrolls with the keyfile and saves the result.
func (c *Connector) identity(ctx context.Context) (identity, error) {
	s, err := ReadSetup(c.cfg)
	if err != nil {
		return identity{}, err
	}
	if !s.Enrolled() {
		if s.Keyfile == nil {
			return identity{}, fmt.Errorf("connector not enrolled: %s holds no identity; start it once with --keyfile (made on the edge by 'sallyport token create')", c.cfg.DataDir)
		}
		return c.enroll(ctx, *s.Keyfile)
	}
	id := identity{cert: *s.Cert, ca: s.CA, pin: s.Pin, edges: s.Edges}
	if c.expired(&id.cert) {
		err := ExpiredError(&id.cert)
		if s.Keyfile == nil {
			c.log.Error("the connector cannot start: its certificate has expired", "err", err)
			return identity{}, err
		}
		// A new keyfile (made with --replace) at the configured path
		// enrolls the connector again; the old, used one is refused.
		c.log.Warn("the connector's certificate has expired; enrolling again with the keyfile", "keyfile", c.cfg.Keyfile, "expired", id.cert.Leaf.NotAfter)
		fresh, eerr := c.enroll(ctx, *s.Keyfile)
		if eerr != nil {
			return identity{}, fmt.Errorf("%w; enrolling again with %s failed: %w", err, c.cfg.Keyfile, eerr)
		}
		return fresh, nil
	}
	return id, nil
}

// closeTunnels shuts every live tunnel down.
func (c *Connector) closeTunnels() {
	c.tunnels.Lock()
	sessions := slices.Collect(maps.Values(c.tunnels.up))
	c.tunnels.Unlock()
	for _, s := range sessions {
		s.Shutdown()
	}
}

// HealthAddr is the address the probes listen on (health.listen); nil
// without one, or before Run has bound it.
func (c *Connector) HealthAddr() net.Addr { return loadAddr(&c.healthAddr) }

// MetricsAddr is the address GET /metrics listens on (metrics.listen);
// nil without one, or before Run has bound it.
func (c *Connector) MetricsAddr() net.Addr { return loadAddr(&c.metricsAddr) }

func loadAddr(p *atomic.Pointer[net.Addr]) net.Addr {
	if a := p.Load(); a != nil {
		return *a
	}
	return nil
}

var (
	errNoTunnel = errors.New("no tunnel up")
	errDraining = errors.New("draining")
)

// Readiness is nil while at least one tunnel is up and the connector is
// not draining; otherwise it is the reason it is not ready.
func (c *Connector) Readiness() error {
	c.tunnels.Lock()
	defer c.tunnels.Unlock()
	switch {
	case c.tunnels.draining:
		return errDraining
	case len(c.tunnels.up) == 0:
		return errNoTunnel
	}
	return nil
}

// serveLocal listens on addr (the config's key; "" for none) and serves
// h, what it names, until the returned function is called, which waits
// for the server. The address bound is stored in bound.
func (c *Connector) serveLocal(what, key, addr string, h http.Handler, bound *atomic.Pointer[net.Addr]) (stop func(), err error) {
	if addr == "" {
		return func() {}, nil
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen for %s on %s (%s): %w", what, addr, key, err)
	}
	a := l.Addr()
	bound.Store(&a)
	c.log.Info(what+" listening", "addr", a.String())
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(l)
	}()
	return func() {
		srv.Close()
		<-done
	}, nil
}

// notify tells systemd state, when it runs the connector with Type=notify.
func (c *Connector) notify(state string) {
	if err := health.Notify(state); err != nil {
		c.log.Warn("could not notify systemd", "state", state, "err", err)
	}
}

// Tunnels reports how many tunnels are up.
func (c *Connector) Tunnels() int {
	c.tunnels.Lock()
	defer c.tunnels.Unlock()
	return len(c.tunnels.up)
}

// WaitTunnels waits until n tunnels are up or ctx ends.
func (c *Connector) WaitTunnels(ctx context.Context, n int) error {
	for {
		c.tunnels.Lock()
		ok, ch := len(c.tunnels.up) >= n, c.tunnels.changed
		c.tunnels.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (c *Connector) setUp(addr string, s *tunnel.Session) {
	c.tunnels.Lock()
	defer c.tunnels.Unlock()
	if s == nil {
		delete(c.tunnels.up, addr)
	} else {
		c.tunnels.up[addr] = s
	}
	close(c.tunnels.changed)
	c.tunnels.changed = make(chan struct{})
}

func (c *Connector) isDraining() bool {
	c.tunnels.Lock()
	defer c.tunnels.Unlock()
	return c.tunnels.draining
}

// handleStream serves one stream: it answers a lookup (see lookup), or
// checks the service against the allow-list, dials the back-end, answers
// the edge and joins the two. It owns st and closes it. It returns true
// if it joined them: the join then stops tracking st when the exchange
// ends (see serve), and Shutdown's wait for handlers includes it.
func (c *Connector) handleStream(st *tunnel.Stream, edge string) (joined bool) {
	start := time.Now()
	h, err := st.ReadHeader(headerTimeout)
	if err != nil {
		c.log.Warn("stream dropped: bad or missing header from edge", "edge", edge, "err", err)
		st.Close()
		return false
	}
	if h.Membership() {
		c.membershipUpdate(st, edge)
		st.Close()
		return false
	}
	if h.Lookup() {
		st.Reply(c.lookup(h, edge))
		st.Close()
		return false
	}
	log := c.log.With("service", h.Service, "client", h.Client, "edge", edge)
	svc, ok := c.current().services[h.Service]
	if !ok {
		c.metrics.StreamRefused(h.Service, wire.CodeUnknownService.String())
		log.Warn("stream refused: service not offered by this connector")
		st.Reply(wire.StreamReply{Code: wire.CodeUnknownService, Reason: fmt.Sprintf("service %q is not offered by this connector", h.Service)})
		st.Close()
		return false
	}
	if c.isDraining() {
		c.metrics.StreamRefused(h.Service, wire.CodeDraining.String())
		st.Reply(wire.StreamReply{Code: wire.CodeDraining, Reason: "connector is shutting down"})
		st.Close()
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), svc.DialTimeout)
	backend, err := c.dialer.DialContext(ctx, "tcp", svc.Address)
	cancel()
	dialed := err == nil
	if dialed {
		if err = writeProxyHeader(backend, svc.ProxyProtocol, h.Client); err != nil {
			backend.Close()
		}
	}
	if err != nil {
		c.metrics.DialFailed(h.Service, err, dialed)
		c.metrics.StreamRefused(h.Service, wire.CodeBackendUnreachable.String())
		log.Warn("stream refused: back-end unreachable", "backend", svc.Address, "err", err)
		st.Reply(wire.StreamReply{Code: wire.CodeBackendUnreachable, Reason: fmt.Sprintf("service %q: back-end unreachable", h.Service)})
		st.Close()
		return false
	}
	if err := st.Reply(wire.StreamReply{Code: wire.CodeOK, Service: h.Service}); err != nil {
		log.Warn("stream lost before it started", "err", err)
		st.Close()
		backend.Close()
		return false
	}
	c.metrics.StreamOpened(h.Service)
	c.handlers.Add(1)
	x := pipe.Start(st, backend, func(res pipe.Result) {
		defer c.handlers.Done()
		c.metrics.Relayed(h.Service, res.AToB, res.BToA)
		// Not log, made by With: a held connection keeps no logger.
		args := []any{"service", h.Service, "client", h.Client, "edge", edge, "backend", svc.Address, "bytes_in", res.AToB, "bytes_out", res.BToA,
			"duration", time.Since(start).Round(time.Microsecond).String()}
		if res.Err != nil {
			args = append(args, "err", res.Err)
		}
		c.log.Info("stream closed", args...)
		c.streams.Done(st)
	})
	// A drain that times out cuts the whole exchange off, not just st.
	c.streams.Attach(st, x)
	return true
}

// lookup answers a stream that names an address (step 7 of the wire
// protocol): the service the allow-list serves exactly that address as,
// or a refusal. It dials nothing, so the edge can apply that service's
// policy to the client before any back-end hears of it; the edge then
// opens a stream for the service, which is served as any other.
func (c *Connector) lookup(h wire.StreamOpen, edge string) wire.StreamReply {
	if c.isDraining() {
		// The edge asks other connectors, and routes no more to this one.
		return wire.StreamReply{Code: wire.CodeDraining, Reason: "connector is shutting down"}
	}
	name, ok := c.current().byAddress[normalizeAddress(h.Address)]
	if !ok {
		// The address is the client's choice: a few lines a second,
		// whatever a client floods the edge's SOCKS listener with.
		if log, unsaid := c.lookupLines.Allow(nil, time.Now()); log {
			c.log.Warn("address lookup refused: address not in this connector's allow-list", "address", h.Address, "client", h.Client, "edge", edge,
				"more_unlogged", unsaid)
		}
		return wire.StreamReply{Code: wire.CodeUnknownService, Reason: fmt.Sprintf("address %q is not in this connector's allow-list", h.Address)}
	}
	c.log.Debug("address lookup answered", "address", h.Address, "service", name, "client", h.Client, "edge", edge)
	return wire.StreamReply{Code: wire.CodeOK, Service: name}
}

// normalizeAddress puts a host:port in one spelling: a lowercase host
// without a trailing dot, IPv6 in its canonical form.
func normalizeAddress(a string) string {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return a
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if ip, err := netip.ParseAddr(host); err == nil {
		host = ip.Unmap().String()
	}
	return net.JoinHostPort(host, port)
}
