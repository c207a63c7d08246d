//go:build linux

package netns_test

import (
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/netns"
)

// listenEach has every edge host listen on port and answer each
// connection with its own index, then close.
func listenEach(t *testing.T, c *netns.ClusterTopology, port int) {
	t.Helper()
	for i, e := range c.Edges {
		var l net.Listener
		if err := e.Do(func() (err error) {
			l, err = net.Listen("tcp", net.JoinHostPort("0.0.0.0", strconv.Itoa(port)))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		go func() {
			for {
				conn, err := l.Accept()
				if err != nil {
					return
				}
				conn.Write([]byte{byte('0' + i)})
				conn.Close()
			}
		}()
	}
}

// answer dials addr from n and returns the one byte the listener sends.
func answer(n *netns.Namespace, addr string) (string, error) {
	conn, err := n.DialTimeout(addr, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	b, err := io.ReadAll(conn)
	return string(b), err
}

// TestClusterTopology checks the test bench itself: the balancer spreads
// clients over every edge, and a partition cuts an edge off from the
// other members while clients and connectors still reach it.
func TestClusterTopology(t *testing.T) {
	t.Parallel()
	netns.SkipIfMissing(t, suite.skip)
	const port = 8080
	c := netns.NewCluster(t, 3, true, netns.TunnelPort, []int{port})
	listenEach(t, c, port)
	listenEach(t, c, netns.ClusterPort)
	vip := net.JoinHostPort(netns.ClusterVIP, strconv.Itoa(port))
	seen := map[string]int{}
	for range 6 {
		got, err := answer(c.Outside, vip)
		if err != nil {
			t.Fatalf("client through the balancer: %v", err)
		}
		seen[got]++
	}
	if len(seen) != 3 || seen["0"] != 2 || seen["1"] != 2 || seen["2"] != 2 {
		t.Errorf("6 clients through the balancer reached edges %v, want each of 3 twice", seen)
	}

	cluster := func(from *netns.Namespace, to int) error {
		_, err := answer(from, net.JoinHostPort(netns.EdgeAddr(to), strconv.Itoa(netns.ClusterPort)))
		return err
	}
	if err := cluster(c.Edges[1], 0); err != nil {
		t.Fatalf("edge 1 to edge 0's cluster port before the partition: %v", err)
	}
	if err := cluster(c.Witness, 0); err != nil {
		t.Fatalf("the witness to edge 0's cluster port before the partition: %v", err)
	}
	c.Partition(t, 0)
	for _, from := range []*netns.Namespace{c.Edges[1], c.Edges[2], c.Witness} {
		if err := cluster(from, 0); err == nil {
			t.Errorf("%s reached edge 0 across the partition", from.Role)
		}
	}
	if err := cluster(c.Edges[0], 2); err == nil {
		t.Errorf("edge 0 reached edge 2 across the partition")
	}
	if err := cluster(c.Edges[1], 2); err != nil {
		t.Errorf("edge 1 to edge 2 (same side of the partition): %v", err)
	}
	if got, err := answer(c.Outside, net.JoinHostPort(netns.EdgeAddr(0), strconv.Itoa(port))); err != nil || got != "0" {
		t.Errorf("a client to the partitioned edge 0 = %q, %v; want it still reachable", got, err)
	}
	c.Heal(t)
	if err := cluster(c.Edges[1], 0); err != nil {
		t.Errorf("edge 1 to edge 0 after healing: %v", err)
	}
}

// newCluster builds a cluster deployment for t, or skips t loudly (fails
// it under CI=true). The cluster tests do not run in parallel: each runs
// three race-built edges, two connectors and their stores, and five of
// them at once on two cores made every store call take seconds, which an
// edge rightly takes for a lost store.
func newCluster(t *testing.T, edges int, witness bool) *netns.ClusterStack {
	t.Helper()
	netns.SkipIfMissing(t, suite.skip)
	s := netns.NewClusterStack(t, suite.bin, edges, witness)
	t.Cleanup(func() {
		for _, p := range s.Sallyports() {
			if n := p.Log.Count("WARNING: DATA RACE"); n > 0 {
				t.Errorf("%s reported %d data races:\n%s", p.Name, n, p.Log.String())
			}
		}
	})
	return s
}

// checkEveryEdge asserts that each edge, dialled directly, serves web.
func checkEveryEdge(t *testing.T, s *netns.ClusterStack, edges []int, when string) {
	t.Helper()
	for _, i := range edges {
		got, err := s.GetFrom(3*time.Second, netns.EdgeAddr(i), "/hello.txt")
		if err != nil || got != s.HTTP.Hello {
			t.Errorf("%s: edge %d serves web: %q, %v", when, i, got, err)
		}
	}
}

// TestClusterAnyEdgeServes: three edges behind the balancer; connectors
// enrolled at the first edge only hold tunnels to all three, so a client
// is served whichever edge it lands on; the two connectors are replicas,
// both used, and one that goes away is out at once.
func TestClusterAnyEdgeServes(t *testing.T) {
	s := newCluster(t, 3, false)
	checkEveryEdge(t, s, []int{0, 1, 2}, "at start")
	for i := range 12 {
		if err := s.CheckHello(1); err != nil {
			t.Fatalf("client %d through the balancer: %v", i, err)
		}
	}
	for _, c := range s.Connectors {
		if c.Log.Count("stream closed") == 0 {
			t.Errorf("%s served none of 12 clients: replicas are not both used", c.Name)
		}
	}

	// A replica that goes away is out at once: once every edge has seen
	// its tunnel go, no client fails.
	gone := s.Connectors[1]
	marks := make([]int, len(s.Edges))
	for i, e := range s.Edges {
		marks[i] = e.Log.Count("connector tunnel down")
	}
	gone.Kill()
	for i, e := range s.Edges {
		e.Log.WaitFor(t, 10*time.Second, marks[i]+1, "connector tunnel down")
	}
	for i := range 6 {
		if err := s.CheckHello(1); err != nil {
			t.Errorf("client %d after a replica died: %v", i, err)
		}
	}
}

// TestClusterEdgeKilled: kill -9 of one edge. Retrying clients reach
// every service within 5 s, the connectors are not restarted, and the
// store keeps working (a new connector enrolls at a surviving edge).
func TestClusterEdgeKilled(t *testing.T) {
	s := newCluster(t, 3, false)
	s.Edges[1].Kill()
	killed := time.Now()
	for {
		err := s.CheckHello(3)
		if err == nil {
			break
		}
		if time.Since(killed) > 5*time.Second {
			t.Fatalf("5s after edge 1 was killed, a retrying client still fails: %v", err)
		}
	}
	t.Logf("retrying clients served %s after the kill", time.Since(killed).Round(time.Millisecond))
	for i := range 9 {
		if err := s.CheckHello(3); err != nil {
			t.Errorf("client %d with edge 1 dead: %v", i, err)
		}
	}
	for _, c := range s.Connectors {
		select {
		case <-c.Done():
			t.Errorf("%s ended when an edge died: %v", c.Name, c.Wait(0))
		default:
		}
	}
	// The store: a write waits for the streams that edge 1 led to elect
	// a new leader among the two left (NATS's Raft: seconds).
	third := enrollAfterLoss(t, s, 2, killed, "edge 1")
	s.WaitTunnels(t, third, 2)
	checkEveryEdge(t, s, []int{0, 2}, "with edge 1 dead")
}

// TestClusterPartition: edge 0 is cut off from the other members while
// clients and connectors still reach it. It must stop serving what it can
// no longer verify (a revocation it would not hear of), one keyfile must
// not enroll two connectors across the cut, and it serves again once
// healed.
func TestClusterPartition(t *testing.T) {
	s := newCluster(t, 3, false)
	keyfile := filepath.Join(t.TempDir(), "twice.keyfile")
	writeBytes(t, keyfile, s.CreateKeyfile(t, 1, "twice"))

	fences := s.Edges[0].Log.Count(netns.FencedLine)
	s.Topo.Partition(t, 0)
	cut := time.Now()
	s.Edges[0].Log.WaitFor(t, 10*time.Second, fences+1, netns.FencedLine)
	t.Logf("edge 0 fenced itself %s after the cut", time.Since(cut).Round(time.Millisecond))
	if got, err := s.GetFrom(3*time.Second, netns.EdgeAddr(0), "/hello.txt"); err == nil {
		t.Errorf("the partitioned edge still serves clients: %q", got)
	}
	checkEveryEdge(t, s, []int{1, 2}, "the majority during the partition")
	for i := range 6 {
		if err := s.CheckHello(3); err != nil {
			t.Errorf("retrying client %d during the partition: %v", i, err)
		}
	}

	// The same keyfile at both sides of the cut: the minority cannot
	// redeem it, the majority can, once.
	minority := s.StartConnector(t, "twice-minority", keyfile, "--edge", netns.EdgeAddr(0)+":5500")
	minority.Log.WaitFor(t, 20*time.Second, 1, "enroll")
	majority := s.StartConnector(t, "twice-majority", keyfile, "--edge", netns.EdgeAddr(1)+":5500")
	majority.Log.WaitFor(t, 20*time.Second, 1, "tunnel up")

	s.Topo.Heal(t)
	healed := time.Now()
	for {
		got, err := s.GetFrom(3*time.Second, netns.EdgeAddr(0), "/hello.txt")
		if err == nil && got == s.HTTP.Hello {
			break
		}
		if time.Since(healed) > 20*time.Second {
			t.Fatalf("edge 0 does not serve 20s after the partition healed: %q, %v", got, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("edge 0 serves again %s after healing", time.Since(healed).Round(time.Millisecond))
	// The minority's connector keeps trying its used keyfile: after the
	// heal it must be told the token was used, never enrolled.
	minority.Log.WaitFor(t, 30*time.Second, 1, "already used")
	if n := minority.Log.Count("tunnel up"); n != 0 {
		t.Errorf("a second connector enrolled with one keyfile across the partition:\n%s", minority.Log.Tail(20))
	}
}

// TestClusterRollingRestart: every edge is stopped (SIGTERM) and started
// again, one at a time, while a client asks through the balancer every
// 100 ms. A client that retries at once (the balancer has no health check
// here, so a try may land on the edge that is down) is always served.
func TestClusterRollingRestart(t *testing.T) {
	s := newCluster(t, 3, false)
	stop := make(chan struct{})
	type result struct {
		runs int
		errs []error
	}
	done := make(chan result)
	go func() {
		runs, errs := netns.KeepServing(stop, 100*time.Millisecond, 1000, func() error { return s.CheckHello(3) })
		done <- result{runs, errs}
	}()
	for i := range s.Edges {
		up := "edge=" + net.JoinHostPort(netns.EdgeAddr(i), strconv.Itoa(netns.TunnelPort))
		marks := make([]int, len(s.Connectors))
		for j, c := range s.Connectors {
			marks[j] = c.Log.Mark()
		}
		s.StopEdge(t, i)
		s.RestartEdge(t, i)
		// Both connectors are back at the restarted edge before the
		// next one goes.
		for j, c := range s.Connectors {
			c.Log.WaitForSince(t, marks[j], 60*time.Second, 1, "tunnel up", up)
		}
		s.Edges[i].Log.WaitFor(t, 30*time.Second, len(s.Connectors), "connector tunnel up")
	}
	close(stop)
	r := <-done
	if len(r.errs) > 0 {
		t.Errorf("%d of %d clients were not served during the rolling restart; first: %v", len(r.errs), r.runs, r.errs[0])
	}
	t.Logf("%d clients asked during the rolling restart, %d not served", r.runs, len(r.errs))
	checkEveryEdge(t, s, []int{0, 1, 2}, "after the rolling restart")
}

// TestClusterWitness: two edges and a witness make the quorum of three;
// losing the witness costs nothing: clients are served and a connector
// enrolls (a write to the store).
func TestClusterWitness(t *testing.T) {
	s := newCluster(t, 2, true)
	if st := s.Status(t, 0); !strings.Contains(st, "store cluster: 3 servers, 3 online") {
		t.Fatalf("two edges and a witness are not three servers:\n%s", st)
	}
	s.Witness.Kill()
	killed := time.Now()
	for i := range 6 {
		if err := s.CheckHello(3); err != nil {
			t.Errorf("client %d with the witness dead: %v", i, err)
		}
	}
	// A write may wait for the election of the streams the witness led.
	third := enrollAfterLoss(t, s, 0, killed, "the witness")
	s.WaitTunnels(t, third, 2)
	if st := s.Status(t, 1); !strings.Contains(st, "store cluster: 3 servers, 2 online") {
		t.Errorf("after the witness's loss:\n%s", st)
	}
}

func writeBytes(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// enrollAfterLoss makes a keyfile on edge i, trying until the store takes
// the write (after a member's loss, the streams it led elect a new leader
// first) or 30 s after lost, and starts a connector with it.
func enrollAfterLoss(t *testing.T, s *netns.ClusterStack, i int, lost time.Time, what string) *netns.Process {
	t.Helper()
	for {
		keyfile, err := s.TryCreateKeyfile(i, "site-3")
		if err == nil {
			t.Logf("the store took a write %s after %s was killed", time.Since(lost).Round(time.Millisecond), what)
			path := filepath.Join(t.TempDir(), "site-3.keyfile")
			writeBytes(t, path, keyfile)
			return s.StartConnector(t, "site-3", path)
		}
		if time.Since(lost) > 30*time.Second {
			t.Fatalf("30s after %s was killed, the store still takes no write: %v", what, err)
		}
	}
}
