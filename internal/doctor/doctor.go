// Package doctor runs a connector's prechecks against its edges, for
// `sallyport doctor`: the connector's certificate, and for each edge
// whether its address resolves, its port is reachable (directly, through
// the proxy, or over WebSocket, as the connector would dial it), whether
// the TLS handshake succeeds with the pinned CA, and how far the edge's
// clock is from this host's.
//
//	report, err := doctor.Run(ctx, cfg, doctor.Options{})
//	report.Write(os.Stdout)
//	if report.Failed() { ... }
//
// It dials what the connector dials and nothing else, and changes
// nothing: no enrollment (a keyfile's token stays unused), no renewal, no
// tunnel (it asks the edge for its time instead of saying hello, so the
// edge counts no connector).
package doctor

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/connector"
	"github.com/sallyport/sallyport/internal/pki"
)

// Status is a check's outcome.
type Status int

// Check outcomes. Only Fail makes a report fail: Warn is something to
// look at that does not stop the connector, Skip a check that could not
// be made (one before it failed, or it does not apply).
const (
	OK Status = iota
	Warn
	Fail
	Skip
)

func (s Status) String() string {
	switch s {
	case OK:
		return "ok"
	case Warn:
		return "WARN"
	case Fail:
		return "FAIL"
	}
	return "skip"
}

// Check names: the connector's own first, then, in this order, each
// edge's.
const (
	CheckCertificate = "certificate"
	// CheckCluster reports a saved cluster membership that cannot be read.
	CheckCluster = "cluster"
	CheckResolve = "resolve"
	CheckReach   = "reach"
	CheckTLS     = "tls"
	CheckClock   = "clock"
)

// Result is one row of a report.
type Result struct {
	Check string
	// Edge is the edge address as the connector dials it; empty for a
	// check of the connector itself.
	Edge   string
	Status Status
	Detail string
}

// Report is every check's result: the connector's own first, then each
// edge's: its own addresses in the order it dials them, then the edges
// the cluster last announced.
type Report []Result

// Failed reports whether any check failed.
func (r Report) Failed() bool {
	return slices.ContainsFunc(r, func(x Result) bool { return x.Status == Fail })
}

// Find returns the result of check for edge ("" for the connector's own).
func (r Report) Find(check, edge string) (Result, bool) {
	i := slices.IndexFunc(r, func(x Result) bool { return x.Check == check && x.Edge == edge })
	if i < 0 {
		return Result{}, false
	}
	return r[i], true
}

// Write prints r as a table: check, edge, result, detail.
func (r Report) Write(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CHECK\tEDGE\tRESULT\tDETAIL")
	for _, x := range r {
		edge := x.Edge
		if edge == "" {
			edge = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", x.Check, edge, x.Status, x.Detail)
	}
	return tw.Flush()
}

// Options are the doctor's dependencies; the zero value uses the real
// ones.
type Options struct {
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Resolver resolves the edges' host names; nil means the system's.
	Resolver *net.Resolver
}

// Clock skew bounds: above skewWarn a host should be synchronised (NTP);
// above pki.ClockSkew, what certificates are backdated by, a certificate
// the edge has just issued is not yet valid on this side, and the edge
// judges token and certificate expiry by another time than this host.
const skewWarn = time.Second

// Run reads the connector's setup as `sallyport connector` would with cfg
// (see connector.ReadSetup) and checks it and each of its edges. An error
// means the setup could not be read (a bad keyfile, a data directory of
// another edge): no check ran.
func Run(ctx context.Context, cfg config.Connector, o Options) (Report, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Resolver == nil {
		o.Resolver = net.DefaultResolver
	}
	cfg.ApplyDefaults()
	setup, err := connector.ReadSetup(cfg)
	if err != nil {
		return nil, err
	}
	conn, err := connector.New(cfg, nil)
	if err != nil {
		return nil, err
	}
	report := Report{certificateCheck(setup, cfg, o.Now())}
	if len(setup.Edges) == 0 {
		return append(report, Result{Check: CheckReach, Status: Fail,
			Detail: "no edge address: neither the config (edges, --edge), the data directory nor a keyfile names one"}), nil
	}
	announced, err := connector.AnnouncedEdges(cfg, setup)
	if err != nil {
		report = append(report, Result{Check: CheckCluster, Status: Warn,
			Detail: fmt.Sprintf("%v: the connector starts from its own edge addresses and learns the cluster again", err)})
	}
	edges := append(slices.Clone(setup.Edges), announced...)
	// The edges are checked at once, each within the dial timeout, and
	// reported in order.
	rows := make([][]Result, len(edges))
	var wg sync.WaitGroup
	for i, addr := range edges {
		wg.Go(func() {
			p := probe{conn: conn, setup: setup, addr: addr, announced: i >= len(setup.Edges), opts: o, timeout: cfg.Tunnel.DialTimeout}
			rows[i] = p.run(ctx)
		})
	}
	wg.Wait()
	for _, r := range rows {
		report = append(report, r...)
	}
	return report, nil
}

// certificateCheck judges the connector's certificate at now: expired
// fails, past its renewal time warns (the connector renews online while
// it runs, so a due renewal has failed or it has not been running). A
// connector not enrolled yet is judged by its keyfile's token.
func certificateCheck(s connector.Setup, cfg config.Connector, now time.Time) Result {
	r := Result{Check: CheckCertificate}
	if !s.Enrolled() {
		switch {
		case s.Keyfile == nil:
			r.Status, r.Detail = Fail, fmt.Sprintf("not enrolled: %s holds no identity and no keyfile is given (--keyfile, or keyfile in the config)", cfg.DataDir)
		case !now.Before(s.Keyfile.Expires):
			r.Status, r.Detail = Fail, fmt.Sprintf("not enrolled, and the keyfile's token expired at %s: ask the edge's operator for a new keyfile (sallyport token create --name %s)", stamp(s.Keyfile.Expires), s.Keyfile.Name)
		default:
			r.Detail = fmt.Sprintf("not enrolled yet: the first start redeems the keyfile's one-time token for %q, valid until %s (this check leaves it unused)", s.Keyfile.Name, stamp(s.Keyfile.Expires))
		}
		return r
	}
	leaf := s.Cert.Leaf
	who := fmt.Sprintf("connector %s (id %s)", leaf.Subject.CommonName, pki.ConnectorID(leaf))
	renew := pki.RenewAt(leaf)
	switch {
	case !now.Before(leaf.NotAfter):
		r.Status, r.Detail = Fail, connector.ExpiredError(s.Cert).Error()
	case !now.Before(renew):
		r.Status, r.Detail = Warn, fmt.Sprintf("%s: valid until %s, but due for renewal since %s: the connector renews online while it runs with a tunnel up; if it runs, its log says why renewal fails", who, stamp(leaf.NotAfter), stamp(renew))
	default:
		r.Detail = fmt.Sprintf("%s: valid until %s, renewed online from %s", who, stamp(leaf.NotAfter), stamp(renew))
	}
	return r
}

// stamp formats t for a detail: UTC, to the second.
func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// probe checks one edge.
type probe struct {
	conn  *connector.Connector
	setup connector.Setup
	addr  string
	// announced is set for an edge the cluster announced, not one of the
	// connector's own addresses.
	announced bool
	opts      Options
	timeout   time.Duration
	rows      []Result
}

// add adds a row for check; an announced edge's first row says so.
func (p *probe) add(check string, s Status, format string, args ...any) {
	detail := fmt.Sprintf(format, args...)
	if p.announced && len(p.rows) == 0 {
		detail = "announced by the cluster; " + detail
	}
	p.rows = append(p.rows, Result{Check: check, Edge: p.addr, Status: s, Detail: detail})
}

// skipRest adds a Skip row for each check after the one that failed.
func (p *probe) skipRest(after string) {
	checks := []string{CheckResolve, CheckReach, CheckTLS, CheckClock}
	for _, c := range checks[slices.Index(checks, after)+1:] {
		p.add(c, Skip, "not tried: %s failed", after)
	}
}

// run makes the edge's checks in order, each only if those before it
// passed, within the timeout the connector dials with.
func (p *probe) run(ctx context.Context) []Result {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	if !p.resolve(ctx) {
		p.skipRest(CheckResolve)
		return p.rows
	}
	raw, ok := p.reach(ctx)
	if !ok {
		p.skipRest(CheckReach)
		return p.rows
	}
	defer raw.Close()
	tc, ok := p.handshake(ctx, raw)
	if !ok {
		p.skipRest(CheckTLS)
		return p.rows
	}
	defer tc.Close()
	p.clock(ctx, tc)
	return p.rows
}

// resolve looks the edge's host name up, as the connector's dial will,
// unless a proxy resolves it: then a name this host cannot resolve is no
// failure.
func (p *probe) resolve(ctx context.Context) bool {
	host, err := edgeHost(p.addr)
	if err != nil {
		p.add(CheckResolve, Fail, "%v", err)
		return false
	}
	if net.ParseIP(host) != nil {
		p.add(CheckResolve, OK, "%s is an IP address", host)
		return true
	}
	proxy, err := p.conn.EdgeProxy(p.addr)
	if err != nil {
		p.add(CheckResolve, Fail, "%v", err)
		return false
	}
	remote := proxy != nil && proxyResolves(proxy.Scheme)
	addrs, err := p.opts.Resolver.LookupHost(ctx, host)
	switch {
	case err == nil && remote:
		p.add(CheckResolve, OK, "%s is %s here; the proxy %s resolves it again", host, strings.Join(addrs, ", "), proxy.Host)
	case err == nil:
		p.add(CheckResolve, OK, "%s is %s", host, strings.Join(addrs, ", "))
	case remote:
		p.add(CheckResolve, Skip, "%s does not resolve here (%v); the proxy %s resolves it", host, err, proxy.Host)
	default:
		p.add(CheckResolve, Fail, "%s does not resolve: %v: check the name, or this host's DNS", host, err)
		return false
	}
	return true
}

// proxyResolves reports whether a proxy of scheme resolves the names it
// is asked to connect to (HTTP CONNECT and socks5h do; socks5 is given
// addresses resolved here).
func proxyResolves(scheme string) bool { return scheme == "http" || scheme == "socks5h" }

// edgeHost returns the host of an edge address: HOST:PORT, or a wss:// URL.
func edgeHost(addr string) (string, error) {
	hostPort := addr
	if u, ok := strings.CutPrefix(strings.ToLower(addr), "wss://"); ok {
		hostPort = u
		if i := strings.IndexByte(hostPort, '/'); i >= 0 {
			hostPort = hostPort[:i]
		}
		if h, _, err := net.SplitHostPort(hostPort); err == nil {
			return h, nil
		}
		return strings.Trim(hostPort, "[]"), nil
	}
	h, _, err := net.SplitHostPort(hostPort)
	if err != nil {
		return "", fmt.Errorf("bad edge address %q: %v", addr, err)
	}
	return h, nil
}

// reach opens the connection the tunnel's TLS would run on.
func (p *probe) reach(ctx context.Context) (net.Conn, bool) {
	start := p.opts.Now()
	raw, err := p.conn.EdgeConn(ctx, p.addr)
	if err != nil {
		p.add(CheckReach, Fail, "%v", err)
		return nil, false
	}
	took := roundSkew(p.opts.Now().Sub(start))
	how := "TCP to " + raw.RemoteAddr().String()
	proxy, _ := p.conn.EdgeProxy(p.addr)
	switch {
	case strings.HasPrefix(strings.ToLower(p.addr), "wss://"):
		how = "WebSocket upgrade at " + p.addr
	case proxy != nil:
		how = "TCP to " + p.addr // RemoteAddr is the proxy's
	}
	if proxy != nil {
		how += " through the proxy " + proxy.Redacted()
	}
	p.add(CheckReach, OK, "%s in %s", how, took)
	return raw, true
}

// handshake runs the tunnel's TLS on raw: the edge must present a
// certificate that chains to the pinned CA. An enrolled connector
// presents its certificate, as its tunnels do; the edge's verdict on it
// comes with the edge's first answer (TLS 1.3), which clock reports.
func (p *probe) handshake(ctx context.Context, raw net.Conn) (*tls.Conn, bool) {
	conf := pki.EnrollTLSConfig(p.setup.Pin, nil)
	if p.setup.Enrolled() {
		conf = pki.ClientTLSConfig(p.setup.CA, p.setup.Pin, p.setup.Cert, nil)
	}
	tc := tls.Client(raw, conf)
	if err := tc.HandshakeContext(ctx); err != nil {
		p.add(CheckTLS, Fail, "%v", err)
		return nil, false
	}
	leaf := tc.ConnectionState().PeerCertificates[0]
	p.add(CheckTLS, OK, "edge certificate %q chains to the pinned CA %s", leaf.Subject.CommonName, abbreviatePin(p.setup.Pin))
	return tc, true
}

// abbreviatePin shortens a pin for a table cell.
func abbreviatePin(pin string) string {
	if len(pin) > 19 {
		return pin[:19] + "…"
	}
	return pin
}
