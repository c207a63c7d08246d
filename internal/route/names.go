package route

import (
	"net"
	"strings"
)

// NormalizeHost returns a host name as routes compare it: lower case,
// without a trailing dot. Service names that clients write as host names
// (a SOCKS destination) are compared the same way.
func NormalizeHost(h string) string { return strings.TrimSuffix(strings.ToLower(h), ".") }

// HostOnly returns the host of an HTTP Host header value, without its port
// or an IPv6 address's brackets.
func HostOnly(hostport string) string {
	if host, _, err := net.SplitHostPort(hostport); err == nil {
		return host
	}
	return strings.TrimSuffix(strings.TrimPrefix(hostport, "["), "]")
}

// Names maps host names to services: HTTP Host headers or TLS server names.
// A pattern is an exact name or "*.suffix", which matches any one label
// before suffix; an exact name wins over a wildcard. Names are compared
// after NormalizeHost. The zero value is empty and ready; fill a Names
// before sharing it, after which Lookup is safe for concurrent use.
type Names struct {
	exact map[string]string
	wild  map[string]string // by suffix, without "*."
}

// Add routes pattern to service.
func (n *Names) Add(pattern, service string) {
	if n.exact == nil {
		n.exact, n.wild = map[string]string{}, map[string]string{}
	}
	p := NormalizeHost(pattern)
	if suffix, ok := strings.CutPrefix(p, "*."); ok {
		n.wild[suffix] = service
		return
	}
	n.exact[p] = service
}

// Lookup returns the service for host (no port) and whether one matched.
func (n Names) Lookup(host string) (string, bool) {
	h := NormalizeHost(host)
	if s, ok := n.exact[h]; ok {
		return s, true
	}
	if i := strings.IndexByte(h, '.'); i > 0 {
		s, ok := n.wild[h[i+1:]]
		return s, ok
	}
	return "", false
}
