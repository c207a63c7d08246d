// Package edge is sallyport's DMZ role: the only process that listens. It
// accepts tunnels (and enrollments) from connectors on its tunnel port,
// accepts clients on its public listeners, and carries each client
// connection as one stream through a tunnel that offers the client's
// service.
//
//	e, err := edge.New(cfg, logger)
//	if err != nil { ... }           // a bad config, nothing started
//	err = e.Run(ctx)                // serves until ctx ends, then drains
package edge

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sallyport/sallyport/internal/admin"
	"github.com/sallyport/sallyport/internal/admission"
	"github.com/sallyport/sallyport/internal/atomicfile"
	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/fence"
	"github.com/sallyport/sallyport/internal/health"
	"github.com/sallyport/sallyport/internal/ingress"
	"github.com/sallyport/sallyport/internal/loglimit"
	"github.com/sallyport/sallyport/internal/metrics"
	"github.com/sallyport/sallyport/internal/openings"
	"github.com/sallyport/sallyport/internal/pki"
	"github.com/sallyport/sallyport/internal/route"
	"github.com/sallyport/sallyport/internal/slowdown"
	"github.com/sallyport/sallyport/internal/store"
	"github.com/sallyport/sallyport/internal/tunnel"
	"github.com/sallyport/sallyport/internal/wstunnel"
	"golang.org/x/time/rate"
)

// Files in the edge's data directory.
const (
	AdminTokenFile = "admin.token" // the admin API's bearer token, mode 0600
	AdminAddrFile  = "admin.addr"  // where the admin API listens, written at start
	// MetricsTokenFile is the bearer token that reads GET /metrics and
	// nothing else (mode 0600), for a Prometheus server.
	MetricsTokenFile = "metrics.token"
)

// Edge is one edge process. Create it with New and run it with Run, once.
type Edge struct {
	cfg config.Edge
	log *slog.Logger
	now func() time.Time

	routes route.Table[*tunnel.Session]

	// ready is closed once every listener is up; the fields after it are
	// set before that and read-only afterwards.
	ready chan struct{}
	id    string
	ca    *pki.CA
	// st is the store, its calls counted and timed (plainStore has the
	// store as opened).
	st         store.Store
	tlsConfig  *tls.Config
	tunnelAddr net.Addr
	adminAddr  net.Addr
	advertise  []string
	// listeners are the public listeners.
	listeners *ingress.Set
	// live is the services, policies and shared listeners in force (the
	// config's at start, then a reload's); set before ready.
	live atomic.Pointer[liveConfig]
	// reload serializes reloads; load reads the config again.
	reload struct {
		sync.Mutex
		load func() (config.Edge, error)
	}
	// cookies are the used HTTP sessions, fed by a watch on the store.
	cookies cookieSessions
	// carried are the WebSocket sessions whose connection this edge
	// carries (sessions.go).
	carried carriedSessions
	// cookieReads bounds the store reads of cookies this edge does not
	// know (SessionCookie).
	cookieReads *rate.Limiter
	// failing marks the tunnels whose connector could not reach a
	// service's back-end lately (failing.go).
	failing failing

	// conns is what the edge knows of connectors: the live tunnels, and
	// each connector's identity as the store has it. Both change under
	// one lock, so a tunnel's routes always follow its connector's grants.
	// Nothing done per hello, per watch event or per admin row walks
	// every tunnel: they are indexed by connector (docs/cluster.md §9).
	conns struct {
		sync.Mutex
		tunnels map[*tunnel.Session]*tunnelInfo
		// byID and byName hold the same tunnels by connector id and by
		// the name in its certificate (see addTunnelLocked).
		byID, byName tunnelIndex
		// ids are the enrolled connectors by id, fed by a watch on the
		// store (a read per connection would not scale to a cluster).
		ids map[string]store.Connector
		// warned holds, by connector id, the ungranted offers already
		// logged, so that a pool of tunnels or reconnects say each once.
		warned map[string]map[string]bool
		// lastSeen is when each connector's last tunnel to this edge
		// ended, by id.
		lastSeen map[string]time.Time
	}

	// metrics are the edge's Prometheus metrics (GET /metrics).
	metrics *metrics.Edge

	// refusals counts clients turned away, by reason; refusalLines
	// bounds the lines that log them.
	refusals     admission.Counters
	refusalLines loglimit.Limiter
	// recent keeps the last refusals, for the dashboard (see note).
	recent *admission.Recent
	// openingLines bounds the lines about tunnel-port connections that
	// failed before they authenticated (strangerWarn).
	openingLines loglimit.Limiter
	// sheddingLines limits the lines about openings shed at a bound.
	sheddingLines loglimit.Limiter

	// handlers counts every goroutine serving a tunnel-port connection,
	// and every live tunnel until its end has been handled (tunnelEnded).
	handlers sync.WaitGroup
	// openings bounds the tunnel-port connections in their opening.
	openings *openings.Set
	// auditRefusals bounds the refusals strangers can make the edge audit.
	auditRefusals *rate.Limiter
	// becomeMember ends Run with ErrBecomeMember (see memberJoined); set
	// at the start of Run.
	becomeMember func()
	// joinFailures slows failed join attempts by address (serveJoin):
	// after each, that address is refused as busy for a while (100 ms,
	// doubling up to 5 s); other addresses are not slowed. A join secret
	// has 256 random bits, so this guards the store and the audit trail,
	// not the secret.
	joinFailures slowdown.Failures
	// renewals bounds each connector's certificate renewals (renewals.go).
	renewals *renewals

	// members and fence: the cluster's edges, and the freshness fence
	// (members.go, fence.go).
	members members
	fence   *fence.Fence

	// draining is set once Run's context has ended: /readyz then fails,
	// so that balancers send new clients elsewhere during the drain.
	draining atomic.Bool
	// warm is set once the edge holds most of its connectors' tunnels
	// (warm.go).
	warm atomic.Bool
	// healthAddr is admin.health_listen's address; valid after Ready.
	healthAddr net.Addr
}

// tunnelInfo describes one live tunnel.
type tunnelInfo struct {
	connectorID string
	name        string
	remote      string
	// via is the tunnel's transport: tcp (the tunnel port) or websocket
	// (an https listener's /.sallyport/tunnel).
	via   string
	since time.Time
	// offered are the services the connector's Hello offered; those it is
	// granted are routed.
	offered []string
	// instance is the connector's run (Hello.Instance): a new tunnel of
	// the same run offering other services supersedes this one.
	instance string
	// draining is set when the connector said it is shutting down: the
	// tunnel is routed no more, whatever its grants.
	draining bool
}

// New checks cfg and returns an edge ready to Run. It does no I/O.
func New(cfg config.Edge, log *slog.Logger) (*Edge, error) {
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	e := &Edge{
		cfg:      cfg,
		log:      log,
		now:      time.Now,
		ready:    make(chan struct{}),
		openings: openings.New(config.TunnelOpenings, cfg.Tunnel.OpeningsPerSource),

		auditRefusals: newAuditLimiter(),
		renewals:      newRenewals(cfg.ConnectorCertificateTTL),
		refusalLines:  loglimit.Limiter{Lines: refusalLinesPerSecond},
		openingLines:  loglimit.Limiter{Lines: refusalLinesPerSecond},
		recent:        admission.NewRecent(recentRefusals),
		cookieReads:   rate.NewLimiter(cookieReadsPerSecond, cookieReadsBurst),
	}
	e.conns.tunnels = make(map[*tunnel.Session]*tunnelInfo)
	e.conns.ids = make(map[string]store.Connector)
	e.conns.byID = make(tunnelIndex)
	e.conns.byName = make(tunnelIndex)
	e.conns.warned = make(map[string]map[string]bool)
	e.conns.lastSeen = make(map[string]time.Time)
	e.metrics = metrics.NewEdge(slices.Collect(maps.Keys(cfg.Services)), e.Fenced, e.storeCluster)
	e.fence = &fence.Fence{Log: log, Now: func() time.Time { return e.now() }, OnFence: e.fencedTunnels, Round: e.metrics.FenceRound}
	return e, nil
}

// Ready is closed when the edge is listening on every address.
func (e *Edge) Ready() <-chan struct{} { return e.ready }

// TunnelAddr is the tunnel port's address; valid after Ready.
func (e *Edge) TunnelAddr() net.Addr { return e.tunnelAddr }

// AdminAddr is the admin API's address; valid after Ready.
func (e *Edge) AdminAddr() net.Addr { return e.adminAddr }

// ServiceAddr is the public address of a service's listener; valid after Ready.
func (e *Edge) ServiceAddr(name string) net.Addr { return e.listeners.ServiceAddr(name) }

// ListenerAddr is the address of the shared listener at index i of the
// config's Listeners; valid after Ready.
func (e *Edge) ListenerAddr(i int) net.Addr { return e.listeners.ListenerAddr(i) }

// HealthAddr is the address of the probes' own listener
// (admin.health_listen), nil without one; valid after Ready.
func (e *Edge) HealthAddr() net.Addr { return e.healthAddr }

// Errors that /readyz shows; short, and nothing an attacker could use.
var (
	errStarting = errors.New("starting")
	errDraining = errors.New("draining")
	errFenced   = errors.New("fenced: lost its store")
)

// Readiness is nil when the edge serves clients: its store is open, every
// listener is bound, it is not fenced and not draining, and it holds
// tunnels from most of the connectors the other edges hold (warm.go).
// Otherwise it is the reason it is not ready.
func (e *Edge) Readiness() error {
	select {
	case <-e.ready:
	default:
		return errStarting
	}
	switch {
	case e.draining.Load():
		return errDraining
	case e.Fenced():
		return errFenced
	case !e.warmedUp():
		return errWarming
	}
	return nil
}

// AdminToken reads the admin API's bearer token from the data directory.
func (e *Edge) AdminToken() (string, error) {
	return ReadAdminToken(e.cfg.DataDir)
}

// Run starts the edge and serves until ctx ends. It then stops accepting,
// lets live client connections finish for up to the drain timeout, closes
// what is left and returns. It returns early with an error if a listener
// cannot be opened or the data directory cannot be used.
func (e *Edge) Run(parent context.Context) (err error) {
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	e.becomeMember = func() { cancel(ErrBecomeMember) }
	defer func() {
		if err == nil && parent.Err() == nil && errors.Is(context.Cause(ctx), ErrBecomeMember) {
			err = ErrBecomeMember
		}
	}()
	dir := e.cfg.DataDir
	if e.id, err = LoadOrCreateID(dir); err != nil {
		return err
	}
	e.ca, err = pki.LoadOrCreateCA(filepath.Join(dir, "pki"), e.now())
	if err != nil {
		return err
	}
	cluster, err := e.clusterOptions()
	if err != nil {
		return err
	}
	opts := storeOptions(e.cfg, e.log)
	opts.Name, opts.Cluster = "sallyport-"+e.id, cluster
	st, err := store.Open(ctx, opts)
	if err != nil {
		return fmt.Errorf("open the edge's store: %w", err)
	}
	defer st.Close()
	e.st = e.metrics.Store(st)
	stopWatch, err := e.watchIdentities(ctx)
	if err != nil {
		return fmt.Errorf("read the enrolled connectors from the store: %w", err)
	}
	defer stopWatch()
	stopSessions, err := e.watchSessions(ctx)
	if err != nil {
		return fmt.Errorf("read the sessions from the store: %w", err)
	}
	defer stopSessions()
	token, err := atomicfile.LoadOrCreate(filepath.Join(dir, AdminTokenFile), "admin token", func() string { return randomHex(32) })
	if err != nil {
		return err
	}
	metricsToken, err := atomicfile.LoadOrCreate(filepath.Join(dir, MetricsTokenFile), "metrics token", func() string { return randomHex(32) })
	if err != nil {
		return err
	}

	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	listen := func(what, addr string) (net.Listener, error) {
		l, err := listenTCP(what, addr)
		if err == nil {
			lns = append(lns, l)
		}
		return l, err
	}
	tl, err := listen("tunnels", e.cfg.Tunnel.Listen)
	if err != nil {
		return err
	}
	e.tunnelAddr = tl.Addr()
	var guessed bool
	e.advertise, guessed = advertised(e.cfg.Tunnel.Advertise, tl.Addr(), net.InterfaceAddrs)
	if guessed {
		e.log.Warn("tunnel.advertise is not set: keyfiles carry this host's IP addresses, which connectors may not reach; set --advertise to the name or address they dial",
			"advertise", strings.Join(e.advertise, ","))
	}
	certs, err := pki.NewServerCerts(filepath.Join(dir, "pki"), e.ca, hostsOf(e.advertise), e.now, e.serverCertRenewed)
	if err != nil {
		return err
	}
	e.tlsConfig = certs.TLSConfig(nil)

	al, err := listen("the admin API", e.cfg.Admin.Listen)
	if err != nil {
		return err
	}
	e.adminAddr = al.Addr()
	if err := atomicfile.Write(filepath.Join(dir, AdminAddrFile), []byte(al.Addr().String()+"\n"), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", AdminAddrFile, err)
	}

	var hl net.Listener
	if a := e.cfg.Admin.HealthListen; a != "" {
		if hl, err = listen("the health probes", a); err != nil {
			return err
		}
		e.healthAddr = hl.Addr()
	}

	// A file that does not load is named at its key's file and line.
	policies, err := newPolicies(e.cfg.Services, nil, e.log, e.now)
	if err != nil {
		return placed(e.cfg, err)
	}
	e.live.Store(&liveConfig{services: e.cfg.Services, listeners: e.cfg.Listeners, policies: policies})
	if e.listeners, err = ingress.Open(e.cfg, e, listen, e.log); err != nil {
		return placed(e.cfg, err)
	}
	// From here on nothing returns before the drain: the members' loops
	// end with ctx, and leave waits for them.
	leave, err := e.startMembers(ctx)
	if err != nil {
		return fmt.Errorf("join the cluster's edge set in the store: %w", err)
	}

	// The admin API: on the Unix socket in the data directory for the
	// CLI (the directory's and the socket's modes are its authentication,
	// so no token travels), and on a TCP listener with the bearer token.
	alog := e.log.With("component", "admin")
	// GET /metrics takes the admin token or the metrics token, which
	// reads nothing else.
	adminSrv := &http.Server{Handler: admin.WithMetrics(e, admin.TokenHandler(e, token, alog), e.metrics.Handler(), []string{token, metricsToken}, alog),
		ReadHeaderTimeout: 10 * time.Second}
	socketSrv := &http.Server{Handler: admin.WithMetrics(e, admin.SocketHandler(e, alog), e.metrics.Handler(), nil, alog), ReadHeaderTimeout: 10 * time.Second}
	healthSrv := &http.Server{Handler: health.Handler(e.Readiness), ReadHeaderTimeout: 10 * time.Second}
	sl, err := admin.ListenSocket(filepath.Join(dir, admin.SocketFile))
	if err != nil {
		// A data directory whose path is too long for a socket, say: the
		// CLI can still use --admin with the token.
		e.log.Warn("no admin socket; the CLI needs --admin and the token", "err", err)
	}
	var loops sync.WaitGroup
	for srv, l := range map[*http.Server]net.Listener{adminSrv: al, socketSrv: sl, healthSrv: hl} {
		if l == nil {
			continue
		}
		loops.Go(func() {
			if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				e.log.Error("admin API stopped", "listener", l.Addr().String(), "err", err)
			}
		})
	}
	loops.Go(func() { e.acceptTunnels(ctx, tl) })
	loops.Go(func() { e.pruneTokens(ctx) })
	e.listeners.Serve(ctx)
	e.log.Info("edge started", "edge", e.id, "tunnel", tl.Addr().String(), "advertise", strings.Join(e.advertise, ","),
		"admin", al.Addr().String(), "services", len(e.cfg.Services), "shared_listeners", e.listeners.Shared(), "ca_pin", e.ca.Pin())
	close(e.ready)
	e.notify("READY=1")

	<-ctx.Done()
	e.draining.Store(true)
	if errors.Is(context.Cause(ctx), ErrBecomeMember) {
		// The process runs on (a new Run): systemd would take STOPPING=1
		// for the unit's stop and kill it at the stop timeout.
		e.log.Info("the first member joined: this edge restarts to make its store a cluster member; draining live connections", "timeout", e.cfg.DrainTimeout)
	} else {
		e.notify("STOPPING=1")
		e.log.Info("edge stopping: no new connections; draining live ones", "timeout", e.cfg.DrainTimeout)
	}
	tl.Close()
	// The cluster hears of it while the listeners close: a new client
	// must not be let in for as long as the store takes to answer.
	var leaving sync.WaitGroup
	leaving.Go(leave)
	// The admin API and the probes serve through the drain: /readyz
	// answers "draining" while balancers take the edge out.
	if n := e.listeners.Drain(e.cfg.DrainTimeout); n > 0 {
		e.log.Warn("drain timeout: closing client connections still open", "count", n)
	}
	shutdownCtx, stopShutdown := context.WithTimeout(context.Background(), 5*time.Second)
	for _, srv := range []*http.Server{adminSrv, socketSrv, healthSrv} {
		srv.Shutdown(shutdownCtx)
	}
	stopShutdown()
	leaving.Wait()
	loops.Wait()
	e.closeTunnels()
	e.listeners.Wait()
	e.handlers.Wait()
	e.log.Info("edge stopped")
	return nil
}

// notify tells systemd state, when it runs the edge with Type=notify.
func (e *Edge) notify(state string) {
	if err := health.Notify(state); err != nil {
		e.log.Warn("could not notify systemd", "state", state, "err", err)
	}
}

// closeTunnels shuts every tunnel down; tunnelEnded removes the routes.
func (e *Edge) closeTunnels() {
	for _, s := range e.sessions() {
		s.Shutdown()
	}
}

// advertised returns the tunnel addresses to put into keyfiles: the
// configured ones, or else the listener's own address. When it listens on
// every interface, that is this host's non-loopback IP addresses (a host
// name is often not resolvable from the trusted side), or 127.0.0.1 if it
// has none; guessed says so, for a warning.
func advertised(cfg []string, l net.Addr, ifaceAddrs func() ([]net.Addr, error)) (addrs []string, guessed bool) {
	if len(cfg) > 0 {
		return cfg, false
	}
	host, port, _ := net.SplitHostPort(l.String())
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsUnspecified() {
		return []string{l.String()}, false
	}
	if ias, err := ifaceAddrs(); err == nil {
		for _, a := range ias {
			if n, ok := a.(*net.IPNet); ok && n.IP.IsGlobalUnicast() && (ip.To4() == nil || n.IP.To4() != nil) {
				addrs = append(addrs, net.JoinHostPort(n.IP.String(), port))
			}
		}
	}
	if len(addrs) == 0 {
		addrs = []string{net.JoinHostPort("127.0.0.1", port)}
	}
	return addrs, true
}

func hostsOf(addrs []string) []string {
	var hosts []string
	for _, a := range addrs {
		if wstunnel.IsAddress(a) {
			continue // the https listener's certificate is the operator's
		}
		if h, _, err := net.SplitHostPort(a); err == nil && h != "" {
			hosts = append(hosts, h)
		}
	}
	return hosts
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// LoadOrCreateID returns the edge's id, kept in dataDir/edge.id, making
// the data directory (mode 0700) and a new id when there are none. A
// joining edge needs it before it runs: its route certificate is for
// sallyport-<id>.
func LoadOrCreateID(dataDir string) (string, error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return "", fmt.Errorf("create data directory: %w", err)
	}
	return atomicfile.LoadOrCreate(filepath.Join(dataDir, "edge.id"), "edge id", func() string { return "edge-" + randomHex(4) })
}

// ReadAdminToken reads the admin bearer token from an edge's data directory.
func ReadAdminToken(dataDir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, AdminTokenFile))
	if err != nil {
		return "", fmt.Errorf("read the admin token (run this on the edge's host, as its user, with --data set to its data directory): %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// Finished enrollment tokens (used, or expired unused) are kept for
// tokenRetention, so that a late attempt to reuse one is told that it was
// used or expired, and then removed from the store: checked at start and
// every pruneEvery.
const (
	tokenRetention = 7 * 24 * time.Hour
	pruneEvery     = time.Hour
)

// pruneTokens removes finished tokens and sessions from the store until
// ctx ends.
func (e *Edge) pruneTokens(ctx context.Context) {
	t := time.NewTicker(pruneEvery)
	defer t.Stop()
	for {
		for _, p := range []struct {
			what  string
			prune func(context.Context) (int, error)
		}{
			{"enrollment tokens", func(ctx context.Context) (int, error) { return e.st.PruneTokens(ctx, e.now().Add(-tokenRetention)) }},
			{"sessions", e.pruneSessions},
		} {
			n, err := p.prune(ctx)
			switch {
			case err != nil && ctx.Err() == nil:
				e.log.Warn("could not prune finished "+p.what+"; will try again", "err", err)
			case n > 0:
				e.log.Info("finished "+p.what+" pruned", "count", n, "retention", tokenRetention.String())
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
