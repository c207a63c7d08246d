//go:build linux

package netns

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/sallyport/sallyport/internal/realproxy"
)

// The proxy host sits between trusted and the DMZ, as a corporate proxy
// does, on two links of its own:
//
//	trusted 198.18.3.2 ── 198.18.3.1 proxy 198.18.4.2 ── 198.18.4.1 dmz
//
// It does not forward: what crosses it is what its proxy carries.
const (
	ProxyTrustedAddr = "198.18.3.1" // the proxy on the trusted link: where the connector reaches it
	TrustedProxyAddr = "198.18.3.2" // trusted on that link
	ProxyDMZAddr     = "198.18.4.2" // the proxy on the DMZ link: where its connections to the edge come from
	DMZProxyAddr     = "198.18.4.1" // the DMZ on that link

	ProxyPort = 3128 // the port of the proxy host's proxy
)

// Interface names of the proxy host's links.
const (
	ifTrustedPx = "veth-tr-px"
	ifPxTrusted = "veth-px-tr"
	ifPxDMZ     = "veth-px-dmz"
	ifDMZPx     = "veth-dmz-px"
)

// ProxySchemes are the proxies the proxy host can run, by the scheme of
// their URL: tinyproxy for HTTP CONNECT, dante for SOCKS5 (the name
// resolved by the proxy).
var ProxySchemes = []string{"http", "socks5h"}

// ProxyHost is the proxy host of NewProxyStack and the proxy it runs.
type ProxyHost struct {
	NS      *Namespace
	Process *Process
	Scheme  string // http (tinyproxy) or socks5h (dante)
}

// URL is the proxy's URL with the credentials user and password.
func (p *ProxyHost) URL(user, password string) string {
	u := url.URL{Scheme: p.Scheme, User: url.UserPassword(user, password),
		Host: net.JoinHostPort(ProxyTrustedAddr, strconv.Itoa(ProxyPort))}
	return u.String()
}

// AddProxyHost adds a fourth namespace, the proxy host, linked to trusted
// and to the DMZ, and removed with the others. It loads no firewall:
// FenceThroughProxy does.
func (topo *Topology) AddProxyHost(t testing.TB) *Namespace {
	t.Helper()
	n := &Namespace{Name: strings.TrimSuffix(topo.Trusted.Name, "-trusted") + "-proxy", Role: "proxy", Addr: ProxyTrustedAddr}
	host(t, "ip", "netns", "add", n.Name)
	t.Cleanup(func() { n.remove(t) })
	n.Must(t, "ip", "link", "set", "lo", "up")
	host(t, "ip", "link", "add", ifTrustedPx, "netns", topo.Trusted.Name, "type", "veth",
		"peer", "name", ifPxTrusted, "netns", n.Name)
	host(t, "ip", "link", "add", ifPxDMZ, "netns", n.Name, "type", "veth",
		"peer", "name", ifDMZPx, "netns", topo.DMZ.Name)
	for _, a := range []struct {
		n         *Namespace
		dev, addr string
	}{
		{topo.Trusted, ifTrustedPx, TrustedProxyAddr},
		{n, ifPxTrusted, ProxyTrustedAddr},
		{n, ifPxDMZ, ProxyDMZAddr},
		{topo.DMZ, ifDMZPx, DMZProxyAddr},
	} {
		a.n.Must(t, "ip", "addr", "add", a.addr+"/24", "dev", a.dev)
		a.n.Must(t, "ip", "link", "set", a.dev, "up")
	}
	n.Must(t, "ip", "route", "add", "default", "via", DMZProxyAddr)
	return n
}

// FenceThroughProxy loads the firewalls of a site whose only way out is
// its proxy. In trusted: no new inbound connection, and out only to the
// proxy host's ProxyPort, plus loopback. In the DMZ: inbound to the
// edge's https listener (HTTPSPort) from the proxy host alone, to its
// public ports from anywhere, nothing else (not its tunnel port).
func (topo *Topology) FenceThroughProxy(t testing.TB, publicPorts []int) {
	t.Helper()
	topo.Trusted.Nft(t, fmt.Sprintf(`table inet sallyport {
	chain input {
		type filter hook input priority filter; policy drop;
		iif "lo" accept
		ct state established,related accept
		counter drop
	}
	chain forward {
		type filter hook forward priority filter; policy drop;
	}
	chain output {
		type filter hook output priority filter; policy drop;
		oif "lo" accept
		ip daddr %s tcp dport %d accept
	}
}
`, ProxyTrustedAddr, ProxyPort))
	var ports []string
	for _, p := range publicPorts {
		ports = append(ports, strconv.Itoa(p))
	}
	topo.DMZ.Nft(t, fmt.Sprintf(`table inet sallyport {
	chain input {
		type filter hook input priority filter; policy drop;
		iif "lo" accept
		ct state established,related accept
		ip saddr %s tcp dport %d accept
		tcp dport { %s } accept
	}
}
`, ProxyDMZAddr, HTTPSPort, strings.Join(ports, ", ")))
}

// startProxy runs the proxy of scheme on the proxy host n, listening on
// ProxyTrustedAddr:ProxyPort for trusted's addresses, requiring
// realproxy.User and realproxy.Password, and allowed to reach the edge's
// https listener only; it waits until the proxy listens.
func startProxy(t testing.TB, n *Namespace, scheme string) *ProxyHost {
	t.Helper()
	var name string
	var argv []string
	switch scheme {
	case "http":
		name, argv = "tinyproxy", realproxy.Tinyproxy(t, t.TempDir(), realproxy.TinyproxyConfig{
			Listen: ProxyTrustedAddr, Port: ProxyPort, ConnectPorts: []int{HTTPSPort}})
	case "socks5h":
		name, argv = "danted", realproxy.Dante(t, t.TempDir(), realproxy.DanteConfig{
			Listen: ProxyTrustedAddr, Port: ProxyPort, External: ProxyDMZAddr,
			Clients: TrustedProxyAddr + "/32",
			Allow:   []string{fmt.Sprintf("%s/32 port = %d", DMZTrustedAddr, HTTPSPort)}})
	default:
		t.Fatalf("no proxy for scheme %q; want one of %v", scheme, ProxySchemes)
	}
	p := n.Start(t, name, argv...)
	WaitListening(t, n, net.JoinHostPort(ProxyTrustedAddr, strconv.Itoa(ProxyPort)), p)
	return &ProxyHost{NS: n, Process: p, Scheme: scheme}
}
