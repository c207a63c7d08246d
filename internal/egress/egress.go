// Package egress is how the connector reaches an address: directly, or
// through an HTTP CONNECT or SOCKS5 proxy, as corporate networks require.
// It is for the connector's connections to the edges only; back-ends are
// dialled directly.
//
//	d, err := egress.FromEnvironment()       // HTTPS_PROXY, ALL_PROXY, NO_PROXY
//	d := &egress.Dialer{Proxy: u}             // or a proxy URL of one's own
//	conn, err := d.DialContext(ctx, "tcp", "edge.example.com:5500")
//
// Through a proxy, the connection is a plain TCP stream to the address
// once DialContext returns: the caller runs TLS over it end to end, so the
// proxy sees only the CONNECT to host:port and opaque bytes. The proxy is
// not trusted: all it can do is refuse or break the connection, and a
// refusal comes back as a *RefusedError that says what to do.
package egress

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"

	"golang.org/x/net/http/httpproxy"
)

// Dialer dials addresses directly or through a proxy. Its zero value dials
// directly. It is safe for concurrent use once set up; its fields must not
// change while it dials.
type Dialer struct {
	// Proxy is the proxy every dial goes through: scheme http (HTTP
	// CONNECT), socks5 (the name resolved here) or socks5h (resolved by
	// the proxy), with optional user:password. Nil dials directly.
	Proxy *url.URL
	// NoProxy lists, in the syntax of NO_PROXY (comma-separated host
	// names, .domains, IP addresses and CIDRs, each with an optional
	// port), the addresses reached directly despite Proxy. When it is set,
	// localhost and loopback addresses are reached directly too, as the
	// environment's NO_PROXY does. Empty means every dial uses Proxy.
	NoProxy string
	// Direct makes the TCP connection: to the proxy, or to the address
	// itself when there is none. Its zero value is a net.Dialer's.
	Direct net.Dialer
}

// FromEnvironment returns a Dialer set up from the environment:
// HTTPS_PROXY (or https_proxy), else ALL_PROXY (or all_proxy), and
// NO_PROXY (or no_proxy). With none set it dials directly.
func FromEnvironment() (*Dialer, error) { return FromEnv(os.Getenv) }

// FromEnv is FromEnvironment with getenv in place of os.Getenv.
func FromEnv(getenv func(string) string) (*Dialer, error) {
	first := func(names ...string) (string, string) {
		for _, n := range names {
			if v := getenv(n); v != "" {
				return n, v
			}
		}
		return "", ""
	}
	name, v := first("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
	if v == "" {
		return &Dialer{}, nil
	}
	// As curl and Go's net/http do, a value without a scheme is an
	// HTTP proxy.
	if !strings.Contains(v, "://") {
		v = "http://" + v
	}
	u, err := ParseProxy(v)
	if err != nil {
		return nil, fmt.Errorf("the environment variable %s: %w", name, err)
	}
	_, noProxy := first("NO_PROXY", "no_proxy")
	return &Dialer{Proxy: u, NoProxy: noProxy}, nil
}

// ParseProxy parses and checks a proxy URL: scheme http, socks5 or socks5h,
// a host and a port, optional user:password, nothing else. Its errors never
// show the password.
func ParseProxy(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		// url's error quotes the whole string, password and all.
		return nil, errors.New("the proxy URL does not parse (not shown: it may hold a password); write it as http://[USER:PASSWORD@]HOST:PORT or socks5://[USER:PASSWORD@]HOST:PORT")
	}
	shown := u.Redacted()
	switch u.Scheme {
	case "http", "socks5", "socks5h":
	case "https":
		return nil, fmt.Errorf("proxy %s: TLS to the proxy (https://) is not supported; use http:// (the tunnel inside is TLS end to end either way)", shown)
	default:
		return nil, fmt.Errorf("proxy %s: the scheme must be http, socks5 or socks5h", shown)
	}
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil || host == "" || port == "" {
		return nil, fmt.Errorf("proxy %s: needs HOST:PORT, e.g. %s://proxy.example.com:%s", shown, u.Scheme, map[bool]string{true: "3128", false: "1080"}[u.Scheme == "http"])
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return nil, fmt.Errorf("proxy %s: only SCHEME://[USER:PASSWORD@]HOST:PORT, no path or query", shown)
	}
	return u, nil
}

// String describes d for a log line: "direct", or the proxy with its
// password redacted and the NO_PROXY list, if any.
func (d *Dialer) String() string {
	if d == nil || d.Proxy == nil {
		return "direct"
	}
	s := d.Proxy.Redacted()
	if d.NoProxy != "" {
		s += " (not for NO_PROXY " + d.NoProxy + ")"
	}
	return s
}

// ProxyFor returns the proxy a dial to addr goes through, nil for none.
func (d *Dialer) ProxyFor(addr string) (*url.URL, error) {
	if d == nil || d.Proxy == nil {
		return nil, nil
	}
	if d.NoProxy == "" {
		return d.Proxy, nil
	}
	cfg := httpproxy.Config{HTTPSProxy: d.Proxy.String(), NoProxy: d.NoProxy}
	u, err := cfg.ProxyFunc()(&url.URL{Scheme: "https", Host: addr})
	if err != nil {
		return nil, fmt.Errorf("proxy %s: %w", d.Proxy.Redacted(), err)
	}
	return u, nil
}

// DialContext connects to addr ("host:port") on network ("tcp", "tcp4" or
// "tcp6"), through the proxy that ProxyFor names, all within ctx. The
// caller owns the connection and closes it. d.DialContext is the plain
// dial function other transports take.
func (d *Dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	p, err := d.ProxyFor(addr)
	if err != nil {
		return nil, err
	}
	if p == nil {
		return d.Direct.DialContext(ctx, network, addr)
	}
	c, err := d.Direct.DialContext(ctx, "tcp", p.Host)
	if err != nil {
		return nil, fmt.Errorf("cannot reach the proxy at %s: %w", p.Host, err)
	}
	var conn net.Conn
	switch p.Scheme {
	case "http":
		conn, err = connectHTTP(ctx, c, p, addr)
	default:
		conn, err = connectSOCKS(ctx, c, p, network, addr, d.Direct.Resolver)
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	return conn, nil
}

// RefusedError is a proxy's refusal to connect to an address, in words.
type RefusedError struct {
	Proxy  string // the proxy's host:port
	Target string // the address asked for
	// Status is the HTTP proxy's status code (407, 403, …); 0 for SOCKS.
	Status int
	// Reason is the HTTP status line's text, or the SOCKS5 reply or
	// authentication failure in words.
	Reason string
	// Auth is set when the refusal is about credentials; Credentials
	// when some were given.
	Auth, Credentials bool
	SOCKS             bool
}

func (e *RefusedError) Error() string {
	what := "the proxy"
	if e.SOCKS {
		what = "the SOCKS5 proxy"
	}
	why := e.Reason
	if e.Status != 0 {
		why = fmt.Sprintf("%d %s", e.Status, e.Reason)
	}
	switch {
	case e.Auth && !e.Credentials:
		return fmt.Sprintf("%s at %s requires credentials (%s); give them in the proxy URL, as USER:PASSWORD@%s", what, e.Proxy, why, e.Proxy)
	case e.Auth:
		return fmt.Sprintf("%s at %s refused the credentials in the proxy URL (%s); check the user name and password", what, e.Proxy, why)
	case e.Status == 403 || strings.Contains(e.Reason, "not allowed by ruleset"):
		return fmt.Sprintf("%s at %s refuses to connect to %s (%s): its rules forbid it; ask its administrator to allow %s", what, e.Proxy, e.Target, why, e.Target)
	default:
		return fmt.Sprintf("%s at %s could not connect to %s (%s)", what, e.Proxy, e.Target, why)
	}
}
