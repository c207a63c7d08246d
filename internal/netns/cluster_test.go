//go:build linux

package netns_test

import (
	"io"
	"net"
	"strconv"
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
