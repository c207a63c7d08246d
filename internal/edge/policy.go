package edge

import (
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sallyport/sallyport/internal/config"
	"golang.org/x/time/rate"
)

// Reason names why the edge turned a client away. Each is counted, and the
// counts are in the admin API's status.
type Reason string

// The reasons a client is refused.
const (
	ReasonNotHTTP        Reason = "not_http"        // an http listener got bytes that are not an HTTP request
	ReasonNotTLS         Reason = "not_tls"         // a tls or https listener got bytes that are not a TLS ClientHello
	ReasonNoSNI          Reason = "no_sni"          // a tls listener got a ClientHello without a server name
	ReasonUnroutedSNI    Reason = "unrouted_sni"    // a tls listener got a server name no service has
	ReasonUnknownHost    Reason = "unknown_host"    // an http(s) request for a host no service has
	ReasonUnknownService Reason = "unknown_service" // a SOCKS or WebSocket client named no configured service
	ReasonNoConnector    Reason = "no_connector"    // no live tunnel offers the service
	ReasonDenied         Reason = "address_denied"  // the client's address is not let in
	ReasonClientCert     Reason = "client_cert"     // no client certificate from the service's CA
	ReasonMaxConnections Reason = "max_connections" // the service's connection cap is reached
	ReasonRate           Reason = "rate_limited"    // the service's rate of new connections is exceeded
	ReasonSOCKS          Reason = "socks_protocol"  // a SOCKS client broke the protocol or asked what is not offered
	ReasonSOCKSAuth      Reason = "socks_auth"      // a SOCKS client failed authentication
	ReasonConnector      Reason = "connector"       // the connector refused the stream (back-end down, draining)
	ReasonTunnel         Reason = "tunnel"          // the tunnel failed while opening the stream
)

// refusedError is a client turned away by the edge, with the reason counted
// and a sentence for the log and, where the protocol can carry it, for the
// client.
type refusedError struct {
	reason  Reason
	service string
	msg     string
}

func (r *refusedError) Error() string { return r.msg }

func refuse(reason Reason, service, format string, args ...any) *refusedError {
	return &refusedError{reason: reason, service: service, msg: fmt.Sprintf(format, args...)}
}

// counters counts refusals by reason. The zero value is ready; it is safe
// for concurrent use.
type counters struct {
	// mu guards n.
	mu sync.Mutex
	n  map[Reason]int64
}

func (c *counters) add(r Reason) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = make(map[Reason]int64)
	}
	c.n[r]++
}

// snapshot returns the counts by reason name.
func (c *counters) snapshot() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int64, len(c.n))
	for r, n := range c.n {
		out[string(r)] = n
	}
	return out
}

// policy is one service's access policy, ready to apply. Its methods are
// safe for concurrent use.
type policy struct {
	allow, deny []netip.Prefix
	max         int64 // 0: no cap
	active      atomic.Int64
	limiter     *rate.Limiter // nil: no limit
	clientCAs   *caFile       // nil: no client certificate needed
}

// newPolicy prepares a service's policy, reading its client CA file
// (again whenever it changes; log tells of that).
func newPolicy(service string, p config.Policy, log *slog.Logger, now func() time.Time) (*policy, error) {
	pol := &policy{max: int64(p.MaxConnections)}
	for _, list := range []struct {
		in  []string
		out *[]netip.Prefix
	}{{p.Allow, &pol.allow}, {p.Deny, &pol.deny}} {
		for _, s := range list.in {
			pfx, err := config.ParseClientNet(s)
			if err != nil {
				return nil, fmt.Errorf("service %s: policy network %q: %w", service, s, err)
			}
			*list.out = append(*list.out, pfx)
		}
	}
	if every, burst := p.Rate.Interval(); every > 0 {
		pol.limiter = rate.NewLimiter(rate.Every(every), burst)
	}
	if p.ClientCA != "" {
		ca, err := loadCAFile(p.ClientCA, log, now)
		if err != nil {
			return nil, fmt.Errorf("service %s: policy.client_ca: %w", service, err)
		}
		pol.clientCAs = ca
	}
	return pol, nil
}

// client is what the edge knows of a client when it applies a policy.
type client struct {
	addr net.Addr
	// certs is the certificate chain the client presented over TLS that
	// the edge terminated, leaf first; nil otherwise.
	certs []*x509.Certificate
	// via names the listener kind, for logs: tcp, http, https, tls,
	// socks5, ws.
	via string
}

// ip returns the client's IP address, unmapped; the zero Addr if unknown.
func (c client) ip() netip.Addr {
	if ap, err := netip.ParseAddrPort(c.addr.String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

// admit applies the policy to c. On success the caller holds one of the
// service's connection slots and must call the returned release once.
func (p *policy) admit(service string, c client, now time.Time) (release func(), _ *refusedError) {
	if len(p.allow) > 0 || len(p.deny) > 0 {
		ip := c.ip()
		if !ip.IsValid() {
			return nil, refuse(ReasonDenied, service, "service %s: client address %s is not an IP address", service, c.addr)
		}
		for _, pfx := range p.deny {
			if pfx.Contains(ip) {
				return nil, refuse(ReasonDenied, service, "service %s does not let in clients from %s", service, ip)
			}
		}
		if len(p.allow) > 0 && !containsAddr(p.allow, ip) {
			return nil, refuse(ReasonDenied, service, "service %s does not let in clients from %s", service, ip)
		}
	}
	if p.clientCAs != nil {
		if err := p.verifyClient(c.certs, now); err != nil {
			return nil, refuse(ReasonClientCert, service, "service %s needs a client certificate from its CA: %v", service, err)
		}
	}
	if p.max > 0 && p.active.Add(1) > p.max {
		p.active.Add(-1)
		return nil, refuse(ReasonMaxConnections, service, "service %s has reached its limit of %d connections; try again later", service, p.max)
	}
	if p.limiter != nil && !p.limiter.AllowN(now, 1) {
		if p.max > 0 {
			p.active.Add(-1)
		}
		return nil, refuse(ReasonRate, service, "service %s is taking new connections too fast; try again later", service)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			if p.max > 0 {
				p.active.Add(-1)
			}
		})
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

// verifyClient checks that the chain's leaf was issued for client use by
// one of the policy's CAs.
func (p *policy) verifyClient(chain []*x509.Certificate, now time.Time) error {
	if len(chain) == 0 {
		return fmt.Errorf("none presented (reach it over https with a client certificate)")
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err := chain[0].Verify(x509.VerifyOptions{
		Roots:         p.clientCAs.current(),
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return fmt.Errorf("certificate %q not accepted: %w", chain[0].Subject.CommonName, err)
	}
	return nil
}
