// Package admission decides whether the edge lets a client in to a
// service: source networks, client certificates, connection caps and rates
// (a Policy per service), with the reason for each refusal and a count of
// refusals by reason. It does no I/O of its own.
//
//	p := admission.NewPolicy("db", admission.Rules{Allow: nets, MaxConnections: 100})
//	release, ref := p.Admit(admission.Client{Addr: c.RemoteAddr(), Via: "tcp"}, time.Now())
//	if ref != nil { counters.Add(ref.Reason); ... tell the client ref.Msg }
//	defer release()
package admission

import (
	"crypto/x509"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Reason names why the edge turned a client away. Each is counted, and the
// counts are in the admin API's status.
type Reason string

// The reasons a client is refused.
const (
	ReasonNotHTTP           Reason = "not_http"            // an http listener got bytes that are not an HTTP request
	ReasonNotTLS            Reason = "not_tls"             // a tls or https listener got bytes that are not a TLS ClientHello
	ReasonNoSNI             Reason = "no_sni"              // a tls listener got a ClientHello without a server name
	ReasonUnroutedSNI       Reason = "unrouted_sni"        // a tls listener got a server name no service has
	ReasonUnknownHost       Reason = "unknown_host"        // an http(s) request for a host no service has
	ReasonUnknownService    Reason = "unknown_service"     // a SOCKS or WebSocket client named no configured service
	ReasonNoConnector       Reason = "no_connector"        // no live tunnel offers the service
	ReasonDenied            Reason = "address_denied"      // the client's address is not let in
	ReasonClientCert        Reason = "client_cert"         // no client certificate from the service's CA
	ReasonMaxConnections    Reason = "max_connections"     // the service's connection cap is reached
	ReasonRate              Reason = "rate_limited"        // the service's rate of new connections is exceeded
	ReasonSOCKS             Reason = "socks_protocol"      // a SOCKS client broke the protocol or asked what is not offered
	ReasonSOCKSAuth         Reason = "socks_auth"          // a SOCKS client failed authentication
	ReasonConnector         Reason = "connector"           // the connector refused the stream (back-end down, draining)
	ReasonTunnel            Reason = "tunnel"              // the tunnel failed while opening the stream
	ReasonConnectorTimeout  Reason = "connector_timeout"   // the connector did not answer a new stream in time
	ReasonTooManyClients    Reason = "too_many_clients"    // the edge's or one address's limit of client connections is reached
	ReasonAddressNotAllowed Reason = "address_not_allowed" // a SOCKS client named an address no connector's allow-list holds
	ReasonSessionRequired   Reason = "session_required"    // the service lets clients in only through a one-time session
	ReasonSession           Reason = "session"             // a session link was used, expired, revoked or unknown
	ReasonStoreLost         Reason = "store_lost"          // the edge is fenced: it cannot reach its store, so it routes no new client
)

// Refusal is a client turned away by the edge: the reason it is counted
// under, the service if one was named, and a sentence for the log and,
// where the protocol can carry it, for the client.
type Refusal struct {
	Reason  Reason
	Service string
	Msg     string
}

func (r *Refusal) Error() string { return r.Msg }

// Refuse makes a Refusal whose message is format with args.
func Refuse(reason Reason, service, format string, args ...any) *Refusal {
	return &Refusal{Reason: reason, Service: service, Msg: fmt.Sprintf(format, args...)}
}

// Counters counts refusals by reason. The zero value is ready; it is safe
// for concurrent use.
type Counters struct {
	counts struct {
		sync.Mutex
		n map[Reason]int64
	}
}

// Add counts one refusal for r.
func (c *Counters) Add(r Reason) {
	c.counts.Lock()
	defer c.counts.Unlock()
	if c.counts.n == nil {
		c.counts.n = make(map[Reason]int64)
	}
	c.counts.n[r]++
}

// Snapshot returns the counts by reason name.
func (c *Counters) Snapshot() map[string]int64 {
	c.counts.Lock()
	defer c.counts.Unlock()
	out := make(map[string]int64, len(c.counts.n))
	for r, n := range c.counts.n {
		out[string(r)] = n
	}
	return out
}

// Client is what the edge knows of a client when it applies a policy.
type Client struct {
	Addr net.Addr
	// Certs is the certificate chain the client presented over TLS that
	// the edge terminated, leaf first; nil otherwise.
	Certs []*x509.Certificate
	// Via names the listener kind, for logs: tcp, http, https, tls,
	// socks5, and "+ws" after it for WebSocket access.
	Via string
	// Session is the id of the one-time session the client presented
	// and the edge accepted; empty for every other client.
	Session string
}

// IP returns the client's IP address, unmapped and without an IPv6 zone
// (a prefix never contains a zoned address, so a zone would slip past
// every network); the zero Addr if unknown.
func (c Client) IP() netip.Addr {
	if ap, err := netip.ParseAddrPort(c.Addr.String()); err == nil {
		return ap.Addr().Unmap().WithZone("")
	}
	return netip.Addr{}
}

// CertVerifier checks a client's certificate chain; tlsfiles.CAFile is one.
type CertVerifier interface {
	Verify(chain []*x509.Certificate, now time.Time) error
}

// Rules are one service's access rules. The zero value lets every client in.
type Rules struct {
	// Allow, if not empty, lets in only clients in these networks; Deny
	// keeps out clients in these, and wins over Allow (ParseClientNet).
	Allow, Deny []netip.Prefix
	// MaxConnections caps the service's live connections; 0: no cap.
	MaxConnections int
	// Every is the average time between two new connections the service
	// takes, with bursts of Burst; 0: no limit.
	Every time.Duration
	Burst int
	// ClientCA, if not nil, requires a client certificate it accepts.
	ClientCA CertVerifier
	// RequireSession lets in only clients with a Session.
	RequireSession bool
}

// Policy is one service's rules, ready to apply. Its methods are safe for
// concurrent use.
type Policy struct {
	service string
	rules   Rules
	// active counts the connections holding a slot; shared with the
	// policies made from this one by WithRules.
	active  *atomic.Int64
	limiter *rate.Limiter // nil: no limit
}

// NewPolicy prepares service's rules.
func NewPolicy(service string, r Rules) *Policy {
	return newPolicy(service, r, new(atomic.Int64))
}

func newPolicy(service string, r Rules, active *atomic.Int64) *Policy {
	p := &Policy{service: service, rules: r, active: active}
	if r.Every > 0 {
		p.limiter = rate.NewLimiter(rate.Every(r.Every), max(r.Burst, 1))
	}
	return p
}

// WithRules returns the service's policy with new rules (a reload): it
// shares p's count of connections, so that those p let in, still live,
// count against the new rules' cap. Its rate starts afresh.
func (p *Policy) WithRules(r Rules) *Policy { return newPolicy(p.service, r, p.active) }

// NeedsClientCert reports whether the service asks for a client certificate.
func (p *Policy) NeedsClientCert() bool { return p.rules.ClientCA != nil }

// Admit applies the policy to c at now. On success the caller holds one of
// the service's connection slots and must call the returned release once
// (later calls do nothing).
func (p *Policy) Admit(c Client, now time.Time) (release func(), _ *Refusal) {
	service, r := p.service, p.rules
	if r.RequireSession && c.Session == "" {
		return nil, Refuse(ReasonSessionRequired, service, "service %s is reached only through a one-time session link; ask for one", service)
	}
	if len(r.Allow) > 0 || len(r.Deny) > 0 {
		ip := c.IP()
		if !ip.IsValid() {
			return nil, Refuse(ReasonDenied, service, "service %s: client address %s is not an IP address", service, c.Addr)
		}
		for _, pfx := range r.Deny {
			if pfx.Contains(ip) {
				return nil, Refuse(ReasonDenied, service, "service %s does not let in clients from %s", service, ip)
			}
		}
		if len(r.Allow) > 0 && !containsAddr(r.Allow, ip) {
			return nil, Refuse(ReasonDenied, service, "service %s does not let in clients from %s", service, ip)
		}
	}
	if r.ClientCA != nil {
		if err := r.ClientCA.Verify(c.Certs, now); err != nil {
			return nil, Refuse(ReasonClientCert, service, "service %s needs a client certificate from its CA: %v", service, err)
		}
	}
	// Every slot is counted, capped or not: a reload may set a cap.
	limit := int64(r.MaxConnections)
	if n := p.active.Add(1); limit > 0 && n > limit {
		p.active.Add(-1)
		return nil, Refuse(ReasonMaxConnections, service, "service %s has reached its limit of %d connections; try again later", service, limit)
	}
	if p.limiter != nil && !p.limiter.AllowN(now, 1) {
		p.active.Add(-1)
		return nil, Refuse(ReasonRate, service, "service %s is taking new connections too fast; try again later", service)
	}
	var once sync.Once
	return func() {
		once.Do(func() { p.active.Add(-1) })
	}, nil
}

func containsAddr(ps []netip.Prefix, ip netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// ParseClientNet parses an entry of a policy's allow or deny list: a CIDR
// prefix or a single address, which stands for itself alone. IPv4-mapped
// IPv6 forms are taken as the IPv4 they map.
func ParseClientNet(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		if p.Addr().Is4In6() {
			p = netip.PrefixFrom(p.Addr().Unmap(), max(p.Bits()-96, 0))
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}
