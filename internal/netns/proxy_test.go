//go:build linux

package netns_test

import (
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/netns"
	"github.com/sallyport/sallyport/internal/realproxy"
)

// TestTunnelThroughProxy: the trusted host may open connections to its
// proxy host's proxy port alone, and only the proxy host may reach the
// edge's https listener (443); the DMZ drops the tunnel port from
// everyone. Through a real proxy (tinyproxy with Basic credentials for
// HTTP CONNECT; dante with username and password for SOCKS5) the real
// connector, given --proxy and a keyfile that carries the wss:// address,
// enrolls and keeps its tunnel, and a client outside downloads through it
// with every byte intact. A wrong proxy password is reported in words and
// no tunnel comes up; without the proxy the connector cannot reach the
// edge at all.
func TestTunnelThroughProxy(t *testing.T) {
	t.Parallel()
	for _, scheme := range netns.ProxySchemes {
		t.Run(scheme, func(t *testing.T) {
			t.Parallel()
			netns.SkipIfMissing(t, suite.skip)
			s := netns.NewProxyStack(t, suite.bin, scheme)
			t.Cleanup(func() { checkNoRace(t, s) })
			s.Edge.Log.WaitFor(t, 5*time.Second, 1, "connector enrolled", "via=websocket")
			s.Edge.Log.WaitFor(t, 5*time.Second, 1, "connector tunnel up", "via=websocket")
			s.Connector.Log.WaitFor(t, 5*time.Second, 1, "tunnel up", "edge="+netns.WebSocketEdge)
			if d, err := s.CheckBig(60 * time.Second); err != nil {
				t.Fatalf("download through the tunnel behind the proxy: %v (%+v)", err, d)
			}
			// The tunnel is the proxy's connection to the edge.
			checkProxyCarries(t, s)
			if n := s.Connector.Log.Count(realproxy.Password); n > 0 {
				t.Errorf("the connector's log shows the proxy's password on %d lines", n)
			}

			// The refusals run side by side: each is a new connector
			// on a data directory of its own, with a keyfile of its own,
			// started here (the stack is this goroutine's alone).
			const wrong = "wrong-proxy-pass"
			wrongPass := s.EnrollConnector(t, "wrong-password", t.TempDir(), "--proxy", s.Proxy.URL(realproxy.User, wrong))
			direct := s.EnrollConnector(t, "direct", t.TempDir(), "--proxy", "direct")
			t.Run("wrong password", func(t *testing.T) {
				t.Parallel()
				c := wrongPass
				c.Log.WaitFor(t, 30*time.Second, 2, "enrollment attempt failed", "refused the credentials", "check the user name and password")
				for _, line := range c.Log.Lines("enrollment attempt failed") {
					if strings.Contains(line, "tls:") || strings.Contains(line, "TLS handshake") {
						t.Errorf("the refusal reads as a TLS error: %s", line)
					}
				}
				if n := c.Log.Count(wrong); n > 0 {
					t.Errorf("the connector's log shows the wrong password on %d lines", n)
				}
				if n := c.Log.Count("tunnel up"); n > 0 {
					t.Errorf("a tunnel came up with a wrong proxy password:\n%s", c.Log.String())
				}
				// The edge has enrolled the stack's connector alone
				// (neither refused one can reach it).
				if n := s.Edge.Log.Count("connector enrolled"); n != 1 {
					t.Errorf("the edge enrolled %d connectors; want 1, the one with the right proxy password", n)
				}
			})
			t.Run("direct", func(t *testing.T) {
				t.Parallel()
				c := direct
				// The connector's dial to the edge times out (10s): its
				// packets are dropped.
				c.Log.WaitFor(t, 30*time.Second, 1, "enrollment attempt failed", "context deadline exceeded")
				if n := c.Log.Count("tunnel up"); n > 0 {
					t.Errorf("a tunnel came up without the proxy:\n%s", c.Log.String())
				}
				// No way around the proxy: not from trusted to the
				// edge's https listener or tunnel port, not from the
				// proxy host to the tunnel port.
				https := net.JoinHostPort(netns.DMZTrustedAddr, strconv.Itoa(netns.HTTPSPort))
				tunnelPort := net.JoinHostPort(netns.DMZTrustedAddr, strconv.Itoa(netns.TunnelPort))
				checkDropped(t, s.Topo.Trusted, https)
				checkDropped(t, s.Topo.Trusted, tunnelPort)
				checkDropped(t, s.Proxy.NS, tunnelPort)
				checkDropped(t, s.Topo.Outside, net.JoinHostPort(netns.DMZOutsideAddr, strconv.Itoa(netns.HTTPSPort)))
			})
		})
	}
}

// checkProxyCarries fails t unless the proxy host holds an established
// connection to the edge's https listener.
func checkProxyCarries(t *testing.T, s *netns.Stack) {
	t.Helper()
	socks, err := s.Proxy.NS.Sockets()
	if err != nil {
		t.Fatal(err)
	}
	https := net.JoinHostPort(netns.DMZTrustedAddr, strconv.Itoa(netns.HTTPSPort))
	for _, so := range socks {
		if so.Proto == "tcp" && so.State == "ESTAB" && so.Peer == https {
			return
		}
	}
	t.Errorf("no connection from the proxy host to the edge's %s: %v", https, socks)
}
