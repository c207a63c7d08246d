package config

import (
	"fmt"
	"path"
	"strings"
	"time"

	"github.com/sallyport/sallyport/internal/admission"
	"github.com/sallyport/sallyport/internal/route"
)

// Kinds of shared public listener (Listener.Kind). A tcp listener is not
// among them: it serves one service and is that service's Listen.
const (
	KindHTTP   = "http"   // HTTP/1.1, routed by Host; WebSocket on EdgeHosts
	KindHTTPS  = "https"  // TLS terminated with Certificates, then as http
	KindTLS    = "tls"    // TLS passed through undecrypted, routed by SNI
	KindSOCKS5 = "socks5" // SOCKS5 CONNECT to a service named as a domain
)

// Listener is a public listener shared by many services: the edge tells
// them apart by protocol (Host header, SNI, SOCKS destination). Keys that
// do not apply to the listener's Kind must be left unset.
type Listener struct {
	// Kind is http, https, tls or socks5. Required.
	Kind string `yaml:"kind"`
	// Listen is the listen address, such as ":443". Required; port 0 picks
	// a free port.
	Listen string `yaml:"listen"`
	// Certificates are the certificate and key files an https listener
	// serves, chosen by the client's SNI; the files are read again when
	// they change. Required for https, at least one.
	Certificates []CertificateFiles `yaml:"certificates"`
	// EdgeHosts are the host names (exact or "*.example.com") that the edge
	// itself answers on an http or https listener: WebSocket access to
	// services at /ws/<service>. They must not be any service's Hosts.
	EdgeHosts []string `yaml:"edge_hosts"`
	// WSOrigins are the page origins (host patterns such as
	// "app.example.com" or "*.example.com:8443") allowed to open
	// WebSockets on EdgeHosts besides the edge host itself; empty means
	// same-origin pages only.
	WSOrigins []string `yaml:"ws_origins"`
	// ForwardedHeaders sets X-Forwarded-For, -Proto and -Host on requests
	// to back-ends of an http or https listener; nil means true. Headers of
	// these names sent by clients are always removed.
	ForwardedHeaders *bool `yaml:"forwarded_headers"`
	// StripHeaders are more request headers an http or https listener
	// removes before a request reaches a back-end. The headers proxies use
	// for a client's address (ClientAddressHeaders) are always removed,
	// so that a client cannot claim another address.
	StripHeaders []string `yaml:"strip_headers"`
	// ClientCA is a PEM file of CA certificates; when set, an https
	// listener accepts only clients with a certificate signed by one.
	ClientCA string `yaml:"client_ca"`
	// Users are the accounts of a socks5 listener (RFC 1929 username and
	// password); empty means no authentication.
	Users []SOCKSUser `yaml:"users"`
}

// ClientAddressHeaders are the request headers that proxies use to pass on
// a client's address; an http or https listener removes each that a client
// sends (X-Forwarded-* are replaced or removed as ForwardedHeaders says).
var ClientAddressHeaders = []string{"X-Real-IP", "True-Client-IP", "X-Client-IP", "CF-Connecting-IP", "Fastly-Client-IP", "X-Cluster-Client-IP"}

// CertificateFiles is one certificate chain and its private key, PEM files.
type CertificateFiles struct {
	// Cert is the certificate chain file, leaf first. Required.
	Cert string `yaml:"cert"`
	// Key is the private key file. Required.
	Key string `yaml:"key"`
}

// SOCKSUser is one account of a socks5 listener.
type SOCKSUser struct {
	// Name is the user name, 1 to 255 bytes. Required.
	Name string `yaml:"name"`
	// PasswordFile holds the password (its first line, 1 to 255 bytes); a
	// password is never written in the config itself. Required.
	PasswordFile string `yaml:"password_file"`
}

// Policy says which clients may reach a service, on every listener that
// leads to it. The zero value lets every client in.
type Policy struct {
	// Allow lists the client networks (CIDR such as 10.0.0.0/8, or single
	// addresses) let in; empty means every address that Deny does not
	// name.
	Allow []string `yaml:"allow"`
	// Deny lists client networks refused; it wins over Allow.
	Deny []string `yaml:"deny"`
	// MaxConnections caps the service's concurrent connections (on http
	// and https: requests in flight); zero means no cap.
	MaxConnections int `yaml:"max_connections"`
	// Rate limits how fast new connections (on http and https: requests)
	// are let in; the zero value means no limit.
	Rate Rate `yaml:"rate"`
	// ClientCA is a PEM file of CA certificates: only clients that present
	// a certificate signed by one of them on an https listener are let in.
	// A service with a ClientCA cannot have a tcp Listen or SNI routes,
	// where the edge sees no client certificate.
	ClientCA string `yaml:"client_ca"`
	// RequireSession lets clients in only through a one-time session
	// (`sallyport sessions create`): a WebSocket at /s/<token> on an
	// edge host, or, for a service with hosts, the cookie its link's use
	// set (other requests to its hosts get a 401 page). Every other way
	// in (/ws/<service>, SOCKS) is refused, and the service may have no
	// listen or sni. False: sessions are one way in among others.
	RequireSession bool `yaml:"require_session"`
}

// Rate is a token-bucket limit on new connections: Connections per Per on
// average, with bursts of up to Burst.
type Rate struct {
	// Connections is how many new connections are let in per Per; zero
	// means no limit.
	Connections int `yaml:"connections"`
	// Per is the period of Connections; zero means 1s.
	Per time.Duration `yaml:"per"`
	// Burst is how many connections may arrive at once after a quiet
	// spell; zero means Connections.
	Burst int `yaml:"burst"`
}

// Interval returns the average time between two connections the rate lets
// in, and the burst, with the defaults applied; a zero interval means no
// limit.
func (r Rate) Interval() (time.Duration, int) {
	if r.Connections <= 0 {
		return 0, 0
	}
	per := r.Per
	if per <= 0 {
		per = time.Second
	}
	burst := r.Burst
	if burst <= 0 {
		burst = r.Connections
	}
	return max(per/time.Duration(r.Connections), 1), burst
}

// ForwardHeaders reports whether the listener sets X-Forwarded-* headers.
func (l Listener) ForwardHeaders() bool { return l.ForwardedHeaders == nil || *l.ForwardedHeaders }

// listenersAndRoutes checks the shared listeners and the services' routes and policies
// of e, adding every listen address to ls.
func (c *checker) listenersAndRoutes(e Edge, ls *[]listener) {
	kinds := map[string]bool{}
	hosts := map[string]string{} // normalized host → key that claimed it
	for i, l := range e.Listeners {
		key := fmt.Sprintf("listeners[%d]", i)
		c.listener(key, l, ls)
		kinds[l.Kind] = true
		// Several listeners (http and https, say) may serve one edge host;
		// no service may have it.
		own := map[string]string{}
		for j, h := range l.EdgeHosts {
			hk := fmt.Sprintf("%s.edge_hosts[%d]", key, j)
			c.routeName(hk, h, own)
			if n := route.NormalizeHost(h); hosts[n] == "" {
				hosts[n] = hk
			}
		}
	}
	sni := map[string]string{}
	for _, name := range inFileOrder(e.Origin, e.Services) {
		key := "services." + name
		s := e.Services[name]
		for j, h := range s.Hosts {
			c.routeName(fmt.Sprintf("%s.hosts[%d]", key, j), h, hosts)
		}
		if len(s.Hosts) > 0 && !kinds[KindHTTP] && !kinds[KindHTTPS] {
			c.add(key+".hosts", "no http or https listener serves these hosts (add one under listeners)")
		}
		for j, h := range s.SNI {
			c.routeName(fmt.Sprintf("%s.sni[%d]", key, j), h, sni)
		}
		if len(s.SNI) > 0 && !kinds[KindTLS] {
			c.add(key+".sni", "no tls listener serves these names (add one with kind: tls under listeners)")
		}
		c.policy(key+".policy", s)
	}
}

// reachable reports whether a service without a tcp listener can still be
// reached: by its hosts or SNI names, through a socks5 listener, or by
// WebSocket on an edge host.
func (e Edge) reachable(s EdgeService) bool {
	if len(s.Hosts) > 0 || len(s.SNI) > 0 {
		return true
	}
	for _, l := range e.Listeners {
		if l.Kind == KindSOCKS5 || len(l.EdgeHosts) > 0 {
			return true
		}
	}
	return false
}

// listener checks one shared listener.
func (c *checker) listener(key string, l Listener, ls *[]listener) {
	switch l.Kind {
	case KindHTTP, KindHTTPS, KindTLS, KindSOCKS5:
	case "":
		c.require(key, "kind", "http, https, tls or socks5")
	default:
		c.add(key+".kind", "unknown kind %q (use http, https, tls or socks5)", l.Kind)
	}
	c.listenAddr(key+".listen", l.Listen, ls)
	web := l.Kind == KindHTTP || l.Kind == KindHTTPS
	only := func(set bool, leaf, kinds string) {
		if set && l.Kind != "" {
			c.add(key+"."+leaf, "only for %s listeners (this one is %s)", kinds, l.Kind)
		}
	}
	only(len(l.Certificates) > 0 && l.Kind != KindHTTPS, "certificates", "https")
	only(l.ClientCA != "" && l.Kind != KindHTTPS, "client_ca", "https")
	only(len(l.EdgeHosts) > 0 && !web, "edge_hosts", "http and https")
	only(len(l.WSOrigins) > 0 && !web, "ws_origins", "http and https")
	only(l.ForwardedHeaders != nil && !web, "forwarded_headers", "http and https")
	only(len(l.Users) > 0 && l.Kind != KindSOCKS5, "users", "socks5")
	only(len(l.StripHeaders) > 0 && !web, "strip_headers", "http and https")
	for j, h := range l.StripHeaders {
		if !validHeaderName(h) {
			c.add(fmt.Sprintf("%s.strip_headers[%d]", key, j), "invalid header name %q (letters, digits and -, such as X-Internal-User)", h)
		}
	}
	if l.Kind == KindHTTPS && len(l.Certificates) == 0 {
		c.require(key, "certificates", "at least one {cert, key} pair of PEM files")
	}
	for j, cf := range l.Certificates {
		ck := fmt.Sprintf("%s.certificates[%d]", key, j)
		if cf.Cert == "" {
			c.require(ck, "cert", "the certificate chain's PEM file")
		}
		if cf.Key == "" {
			c.require(ck, "key", "the private key's PEM file")
		}
	}
	if len(l.WSOrigins) > 0 && len(l.EdgeHosts) == 0 && web {
		c.add(key+".ws_origins", "has no effect without edge_hosts (the names WebSockets are served on)")
	}
	for j, o := range l.WSOrigins {
		if _, err := path.Match(o, ""); err != nil || o == "" || o == "*" || strings.ContainsAny(o, " \t") {
			c.add(fmt.Sprintf("%s.ws_origins[%d]", key, j), "invalid origin pattern %q (use a host pattern such as app.example.com or *.example.com:8443)", o)
		}
	}
	users := map[string]bool{}
	for j, u := range l.Users {
		uk := fmt.Sprintf("%s.users[%d]", key, j)
		switch {
		case u.Name == "":
			c.require(uk, "name", "the user name")
		case len(u.Name) > 255:
			c.add(uk+".name", "longer than 255 bytes, the most SOCKS5 can carry")
		case users[u.Name]:
			c.add(uk+".name", "duplicate user %q", u.Name)
		}
		users[u.Name] = true
		if u.PasswordFile == "" {
			c.require(uk, "password_file", "a file holding the password (passwords are never written in the config)")
		}
	}
}

// validHeaderName reports whether h is an HTTP header name of letters,
// digits and the token punctuation.
func validHeaderName(h string) bool {
	if h == "" {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

// routeName checks a host or SNI name (exact, or "*." and a name) and that
// no other key in claimed holds it.
func (c *checker) routeName(key, h string, claimed map[string]string) {
	name := strings.TrimPrefix(h, "*.")
	if h == "" || strings.Contains(name, "*") || strings.Contains(h, ":") || !validHostname(name) || strings.HasSuffix(h, ".") {
		c.add(key, "invalid host name %q (use a DNS name such as app.example.com, or *.example.com for every name one label below it)", h)
		return
	}
	n := route.NormalizeHost(h)
	if first, dup := claimed[n]; dup {
		c.add(key, "%q is already routed by %s", h, first)
		return
	}
	claimed[n] = key
}

// policy checks a service's access policy.
func (c *checker) policy(key string, s EdgeService) {
	p := s.Policy
	for _, list := range []struct {
		leaf string
		nets []string
	}{{"allow", p.Allow}, {"deny", p.Deny}} {
		for j, n := range list.nets {
			if _, err := admission.ParseClientNet(n); err != nil {
				c.add(fmt.Sprintf("%s.%s[%d]", key, list.leaf, j), "invalid network %q (use a CIDR such as 10.0.0.0/8 or 2001:db8::/32, or one address)", n)
			}
		}
	}
	if p.MaxConnections < 0 {
		c.add(key+".max_connections", "must not be negative (got %d; 0 means no cap)", p.MaxConnections)
	}
	r := p.Rate
	if r.Connections < 0 {
		c.add(key+".rate.connections", "must not be negative (got %d; 0 means no limit)", r.Connections)
	}
	if r.Per < 0 {
		c.add(key+".rate.per", "must not be negative (got %s)", r.Per)
	}
	if r.Burst < 0 {
		c.add(key+".rate.burst", "must not be negative (got %d)", r.Burst)
	}
	if r.Connections == 0 && (r.Per != 0 || r.Burst != 0) {
		c.require(key+".rate", "connections", "how many new connections are let in per period")
	}
	if p.RequireSession && (s.Listen != "" || len(s.SNI) > 0) {
		c.add(key+".require_session", "a service that requires a session is reached only through session links (WebSocket on an edge host, or a cookie on its own hosts); remove this service's listen and sni, or require_session")
	}
	if p.ClientCA != "" && (s.Listen != "" || len(s.SNI) > 0) {
		c.add(key+".client_ca", "the edge sees client certificates on https listeners only; remove this service's listen and sni, or the client_ca")
	}
}

// ProxyProtocol versions a connector may speak to a back-end.
const (
	ProxyV1 = "v1" // the text form
	ProxyV2 = "v2" // the binary form
)

// checkProxyProtocol checks a connector service's proxy_protocol.
func (c *checker) checkProxyProtocol(key, v string) {
	switch v {
	case "", ProxyV1, ProxyV2:
	default:
		c.add(key, "unknown PROXY protocol version %q (use v1 or v2, or leave it out to send none)", v)
	}
}
