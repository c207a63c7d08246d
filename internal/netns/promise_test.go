//go:build linux

package netns_test

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/netns"
)

// TestPromise is the product's promise: real clients in outside reach real
// back-ends in trusted through the edge, while trusted admits no inbound
// connection and has no listening socket of sallyport's.
func TestPromise(t *testing.T) {
	t.Parallel()
	s := newStack(t)

	t.Run("curl", func(t *testing.T) {
		if err := s.CheckHello(); err != nil {
			t.Fatal(err)
		}
		d, err := s.CheckBig(60 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("curl: %d bytes intact in %s", d.Bytes, d.Took.Round(time.Millisecond))
	})

	t.Run("a service without a port of its own, by Host", func(t *testing.T) {
		// Service "wiki" has hosts and no listen: the edge's http listener
		// reaches it by Host...
		d, err := s.CheckBigAt(60*time.Second, netns.WikiURL("/big.bin"), netns.WikiResolve...)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("curl http://%s:%d/big.bin: %d bytes intact in %s", netns.WikiHost, netns.HTTPPort, d.Bytes, d.Took.Round(time.Millisecond))
		// ...and only by Host: the same listener without it refuses.
		other, err := s.Curl(10*time.Second, "http://"+netns.PublicAddr(netns.HTTPPort)+"/big.bin", "--fail")
		if err != nil {
			t.Fatal(err)
		}
		if other.ExitCode != 22 || other.SHA256 == s.HTTP.BigSHA256 {
			t.Errorf("the http listener asked for %s (no service's host) answered curl exit %d with %d bytes; want an HTTP error (exit 22), not the file",
				netns.PublicAddr(netns.HTTPPort), other.ExitCode, other.Bytes)
		}
		// The edge's listening sockets and a port scan ("the edge listens
		// only where configured") show that it has no other way in.
	})

	t.Run("redis-cli", func(t *testing.T) {
		if out, err := s.RedisCLI("PING"); err != nil || out != "PONG" {
			t.Fatalf("redis-cli PING through the edge = %q, %v; want PONG", out, err)
		}
		if err := s.CheckRedis("promise", "kept"); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("redis-benchmark", func(t *testing.T) {
		out, err := s.Outside(120*time.Second, "redis-benchmark", "-h", netns.DMZOutsideAddr,
			"-p", strconv.Itoa(netns.RedisPort), "-n", "2000", "-c", "10", "-q", "-t", "ping,set,get")
		if err != nil {
			t.Fatalf("redis-benchmark through the edge: %v\n%s", err, out)
		}
		for _, test := range []string{"PING_INLINE", "SET", "GET"} {
			if !strings.Contains(out, test+": ") || !strings.Contains(out, "requests per second") {
				t.Errorf("redis-benchmark output lacks a result for %s:\n%s", test, out)
			}
		}
		if strings.Contains(strings.ToLower(out), "error") {
			t.Errorf("redis-benchmark reported errors:\n%s", out)
		}
		t.Logf("redis-benchmark -n 2000 -c 10 through the edge:\n%s", benchmarkResults(out))
	})

	t.Run("ssh", func(t *testing.T) {
		if err := s.CheckSSH(); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("direct connections into trusted fail", func(t *testing.T) {
		checkDirectFails(t, s)
	})

	t.Run("the firewall is what stops them", func(t *testing.T) {
		defer s.Topo.SetTrustedFence(t, netns.TunnelPort, true, true)
		// Without trusted's fence, outside has a route to the HTTP
		// back-end (the DMZ forwards): so the failures above are the
		// firewall's doing, and this test would notice if it stopped.
		s.Topo.SetTrustedFence(t, netns.TunnelPort, false, false)
		c, err := s.Topo.Outside.DialTimeout(net.JoinHostPort(netns.TrustedAddr, strconv.Itoa(netns.BackendHTTPPort)), 3*time.Second)
		if err != nil {
			t.Fatalf("with the firewall off, outside cannot reach the HTTP back-end either (%v): the topology, not the firewall, blocks it", err)
		}
		c.Close()
		// Each half of the fence keeps outside out on its own: the input
		// chain drops the SYN; the output chain drops the SYN-ACK.
		s.Topo.SetTrustedFence(t, netns.TunnelPort, true, false)
		checkDirectFails(t, s)
		s.Topo.SetTrustedFence(t, netns.TunnelPort, false, true)
		checkDirectFailsUncounted(t, s)
	})

	t.Run("the DMZ admits only the edge's ports", func(t *testing.T) {
		// Outside reaches the DMZ's other ports no more than trusted's
		// (the admin API, say); and trusted reaches nothing but the
		// tunnel port, not even the edge's public ports.
		var wg sync.WaitGroup
		for _, try := range []struct {
			from *netns.Namespace
			addr string
		}{
			{s.Topo.Outside, net.JoinHostPort(netns.DMZOutsideAddr, "5501")},
			{s.Topo.Outside, net.JoinHostPort(netns.DMZOutsideAddr, "9")},
			{s.Topo.Trusted, net.JoinHostPort(netns.DMZTrustedAddr, strconv.Itoa(netns.WebPort))},
			{s.Topo.Trusted, net.JoinHostPort(netns.OutsideAddr, "22")},
		} {
			wg.Go(func() { checkDropped(t, try.from, try.addr) })
		}
		wg.Wait()
	})

	t.Run("no listening socket of ours in trusted", func(t *testing.T) {
		socks, err := s.Topo.Trusted.Sockets()
		if err != nil {
			t.Fatal(err)
		}
		backends := map[int]string{s.HTTP.Pid(): "http.server", s.Redis.Pid(): "redis-server", s.SSHD.Pid(): "sshd"}
		seen := map[string]bool{}
		for _, so := range socks {
			if so.State != "LISTEN" && !(so.Proto == "udp" && so.State == "UNCONN") {
				continue
			}
			if so.HeldBy(s.Connector.Pid()) || holderNamed(so, "sallyport") {
				t.Errorf("trusted has a listening socket of sallyport's: %s", so)
			}
			for _, u := range so.Users {
				if name, ok := backends[u.Pid]; ok {
					seen[name] = true
				} else {
					t.Errorf("trusted has a listening socket of a process the test did not start as a back-end: %s", so)
				}
			}
			if len(so.Users) == 0 {
				t.Errorf("trusted has a listening socket of no known process: %s", so)
			}
		}
		for _, name := range backends {
			if !seen[name] {
				t.Errorf("ss shows no listening socket of the back-end %s in trusted: %v", name, socks)
			}
		}
	})

	t.Run("the edge listens only where configured", func(t *testing.T) {
		socks, err := s.Topo.DMZ.Sockets()
		if err != nil {
			t.Fatal(err)
		}
		configured := map[string]bool{strconv.Itoa(netns.TunnelPort): true, "5501": true} // the admin API's default
		for _, p := range netns.PublicPorts {
			configured[strconv.Itoa(p)] = true
		}
		seen := map[string]bool{}
		for _, so := range socks {
			if !so.HeldBy(s.Edge.Pid()) || so.State != "LISTEN" && !(so.Proto == "udp" && so.State == "UNCONN") {
				continue
			}
			_, port, _ := net.SplitHostPort(so.Local)
			if !configured[port] {
				t.Errorf("the edge listens where nothing configures it to: %s", so)
			}
			seen[port] = true
		}
		for port := range configured {
			if !seen[port] {
				t.Errorf("ss shows no listening socket of the edge on its configured port %s", port)
			}
		}

		// A port scan of the edge's address from outside finds the same
		// ports, and no more (a service without listen, "wiki", used to
		// get a random port on every interface). The DMZ's fence is
		// lifted meanwhile, so that every port answers: what the scan
		// sees is the edge's doing, not the fence's.
		s.Topo.SetDMZFence(t, netns.TunnelPort, netns.PublicPorts, false)
		defer s.Topo.SetDMZFence(t, netns.TunnelPort, netns.PublicPorts, true)
		start := time.Now()
		open, unanswered, err := s.Topo.Outside.ScanPorts(netip.MustParseAddr(netns.DMZOutsideAddr), 3*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if len(unanswered) > 0 {
			t.Errorf("with the DMZ's fence lifted, %d ports of %s gave no answer to the scan (%v...): it cannot tell what listens there",
				len(unanswered), netns.DMZOutsideAddr, unanswered[:min(len(unanswered), 10)])
		}
		want := append([]int{netns.TunnelPort}, netns.PublicPorts...)
		slices.Sort(want)
		if !slices.Equal(open, want) {
			t.Errorf("a scan of every port of %s from outside finds %v open; want exactly the tunnel port and the public ports %v", netns.DMZOutsideAddr, open, want)
		}
		t.Logf("a scan of ports 1-65535 of %s from outside took %s and found %v open", netns.DMZOutsideAddr, time.Since(start).Round(time.Millisecond), open)
	})

	t.Run("the connector only dials out", func(t *testing.T) {
		// A slow download keeps a stream, and so a back-end socket, open
		// while ss looks.
		var wg sync.WaitGroup
		wg.Go(func() {
			if _, err := s.CheckBig(60*time.Second, "--limit-rate", "2M"); err != nil {
				t.Error(err)
			}
		})
		defer wg.Wait()
		edge := net.JoinHostPort(netns.DMZTrustedAddr, strconv.Itoa(netns.TunnelPort))
		allowed := map[string]bool{edge: true}
		for _, p := range []int{netns.BackendHTTPPort, netns.BackendRedisPort, netns.BackendSSHPort, netns.BackendClosedPort} {
			allowed[net.JoinHostPort("127.0.0.1", strconv.Itoa(p))] = true
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			socks, err := s.Topo.Trusted.Sockets()
			if err != nil {
				t.Fatal(err)
			}
			var toEdge, toBackend int
			var mine []string
			for _, so := range socks {
				if !so.HeldBy(s.Connector.Pid()) {
					continue
				}
				mine = append(mine, so.String())
				switch {
				case so.Proto != "tcp" || so.State == "LISTEN" || !allowed[so.Peer]:
					t.Errorf("the connector holds a socket that is neither to the edge nor to a back-end: %s", so)
				case so.Peer == edge:
					toEdge++
				default:
					toBackend++
				}
			}
			if toEdge >= 1 && toBackend >= 1 {
				t.Logf("the connector's sockets while a download runs:\n%s", strings.Join(mine, "\n"))
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("within 10s of a download, the connector never held a socket to the edge and one to a back-end at once; it holds: %v", mine)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
}

// checkDirectFails asserts that neither outside nor the DMZ can open a
// connection to any back-end in trusted, and that the attempts go
// unanswered (dropped by the firewall) rather than refused.
func checkDirectFails(t *testing.T, s *netns.Stack) {
	t.Helper()
	before := s.Topo.InboundDropped(t)
	attempts := checkDirectFailsUncounted(t, s)
	// Each attempt's SYN is dropped by trusted's own input chain, not
	// merely left unanswered on the way back.
	if dropped := s.Topo.InboundDropped(t) - before; dropped < attempts {
		t.Errorf("trusted's input chain dropped %d packets during %d connection attempts; want at least one each", dropped, attempts)
	}
}

// checkDirectFailsUncounted is checkDirectFails without looking at the
// input chain's counter; it returns the number of attempts.
func checkDirectFailsUncounted(t *testing.T, s *netns.Stack) (attempts int) {
	t.Helper()
	var wg sync.WaitGroup
	for _, from := range []*netns.Namespace{s.Topo.Outside, s.Topo.DMZ} {
		for _, port := range []int{netns.BackendHTTPPort, netns.BackendRedisPort, netns.BackendSSHPort, netns.BackendClosedPort, netns.TunnelPort} {
			attempts++
			wg.Go(func() { checkDropped(t, from, net.JoinHostPort(netns.TrustedAddr, strconv.Itoa(port))) })
		}
	}
	wg.Wait()
	return attempts
}

// checkDropped asserts that a connection from a namespace to addr gets no
// answer at all: not accepted, not refused, but dropped by a firewall.
func checkDropped(t *testing.T, from *netns.Namespace, addr string) {
	c, err := from.DialTimeout(addr, 2*time.Second)
	if err == nil {
		c.Close()
		t.Errorf("%s opened a connection to %s", from.Role, addr)
		return
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) && !strings.Contains(err.Error(), "i/o timeout") {
		t.Errorf("%s → %s failed with %v; want no answer at all (dropped by the firewall)", from.Role, addr, err)
	}
}

func holderNamed(so netns.Socket, name string) bool {
	for _, u := range so.Users {
		if u.Name == name {
			return true
		}
	}
	return false
}

// benchmarkResults keeps the result lines of redis-benchmark -q, without
// its progress lines.
func benchmarkResults(out string) string {
	var keep []string
	for _, line := range strings.FieldsFunc(out, func(r rune) bool { return r == '\r' || r == '\n' }) {
		if line = strings.TrimSpace(line); strings.Contains(line, "requests per second") {
			keep = append(keep, line)
		}
	}
	return strings.Join(keep, "\n")
}
