//go:build linux

package netns

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
)

// A cluster topology: several edges in the DMZ behind a plain L4 load
// balancer, a trusted host for connectors and back-ends, and an optional
// witness. The router "lb" joins every link and forwards between them;
// clients dial its outside address, the virtual address, and nftables
// there spreads new connections over the edges (numgen, as a stateless
// L4 balancer does), each connection pinned to its edge by conntrack:
//
//	outside 198.18.1.2 ── 198.18.1.1 lb ── 198.18.(10+i).1 ─ 198.18.(10+i).2 edge i
//	                                    ── 198.18.2.1      ─ 198.18.2.2      trusted
//	                                    ── 198.18.30.1     ─ 198.18.30.2     witness
//
// Edges reach each other's cluster ports through lb, and connectors in
// trusted dial each edge's own address; only clients go through the
// balancer. Partition cuts one edge off from the other members (and the
// witness) at lb while clients and connectors still reach it, which is
// the case a cluster must survive without a split brain.
const (
	ClusterVIP         = "198.18.1.1" // the balancer's address: where clients connect
	ClusterTrustedGW   = "198.18.2.1" // lb on the trusted link
	ClusterWitnessAddr = "198.18.30.2"
	ClusterPort        = 6222 // every member's cluster (NATS route) port
)

// EdgeAddr is edge i's address (i from 0), where connectors and the other
// members reach it.
func EdgeAddr(i int) string { return fmt.Sprintf("198.18.%d.2", 10+i) }

// edgeGW is lb's address on edge i's link.
func edgeGW(i int) string { return fmt.Sprintf("198.18.%d.1", 10+i) }

// ClusterTopology is the namespaces of a cluster test; each is removed by
// the test's cleanup, its processes killed by pid first.
type ClusterTopology struct {
	Outside, LB, Trusted *Namespace
	Edges                []*Namespace
	Witness              *Namespace // nil unless asked for
	publicPorts          []int
}

// NewCluster creates the topology with edges edge hosts (1 to 9) and, if
// witness, a witness host; the balancer spreads publicPorts on ClusterVIP
// over all edges. Trusted is fenced as in Fence (no inbound connection;
// out only to the edges' tunnelPort).
func NewCluster(t testing.TB, edges int, witness bool, tunnelPort int, publicPorts []int) *ClusterTopology {
	t.Helper()
	if edges < 1 || edges > 9 {
		t.Fatalf("NewCluster: %d edges; 1 to 9 fit the address plan", edges)
	}
	SkipIfMissing(t, Missing())
	RemoveStale(t)
	id := make([]byte, 3)
	rand.Read(id)
	run := namePrefix + strconv.Itoa(os.Getpid()) + "-" + hex.EncodeToString(id)
	ns := func(role, addr string) *Namespace {
		n := &Namespace{Name: run + "-" + role, Role: role, Addr: addr}
		host(t, "ip", "netns", "add", n.Name)
		t.Cleanup(func() { n.remove(t) })
		n.Must(t, "ip", "link", "set", "lo", "up")
		return n
	}
	c := &ClusterTopology{publicPorts: publicPorts}
	c.LB = ns("lb", ClusterVIP)
	c.LB.Must(t, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward")
	// link joins n to lb on a /24 of its own: n at addr, lb at gw.
	link := func(n *Namespace, ifName, addr, gw string) {
		host(t, "ip", "link", "add", "veth0", "netns", n.Name, "type", "veth", "peer", "name", ifName, "netns", c.LB.Name)
		n.Must(t, "ip", "addr", "add", addr+"/24", "dev", "veth0")
		n.Must(t, "ip", "link", "set", "veth0", "up")
		c.LB.Must(t, "ip", "addr", "add", gw+"/24", "dev", ifName)
		c.LB.Must(t, "ip", "link", "set", ifName, "up")
		n.Must(t, "ip", "route", "add", "default", "via", gw)
	}
	c.Outside = ns("outside", OutsideAddr)
	link(c.Outside, "to-outside", OutsideAddr, ClusterVIP)
	c.Trusted = ns("trusted", TrustedAddr)
	link(c.Trusted, "to-trusted", TrustedAddr, ClusterTrustedGW)
	for i := range edges {
		e := ns("edge"+strconv.Itoa(i), EdgeAddr(i))
		link(e, "to-edge"+strconv.Itoa(i), EdgeAddr(i), edgeGW(i))
		c.Edges = append(c.Edges, e)
	}
	if witness {
		c.Witness = ns("witness", ClusterWitnessAddr)
		link(c.Witness, "to-witness", ClusterWitnessAddr, "198.18.30.1")
	}
	c.Outside.Must(t, "sh", "-c", fmt.Sprintf("echo 4096 131072 %d > /proc/sys/net/ipv4/tcp_rmem", OutsideReceiveBufferMax))
	c.Trusted.Nft(t, c.trustedRuleset(tunnelPort))
	c.LB.Nft(t, c.balancerRuleset())
	return c
}

// trustedRuleset lets nothing into trusted and nothing out but
// connections to the edges' tunnel ports.
func (c *ClusterTopology) trustedRuleset(tunnelPort int) string {
	var edges []string
	for i := range c.Edges {
		edges = append(edges, EdgeAddr(i))
	}
	return fmt.Sprintf(`table inet sallyport {
	chain input {
		type filter hook input priority filter; policy drop;
		iif "lo" accept
		ct state established,related accept
		counter drop
	}
	chain output {
		type filter hook output priority filter; policy drop;
		oif "lo" accept
		ip daddr { %s } tcp dport %d accept
	}
}
`, strings.Join(edges, ", "), tunnelPort)
}

// BalancerTable is the nftables table of the balancer in lb.
const BalancerTable = "ip sallyport_lb"

// balancerRuleset spreads new connections to the public ports on the
// virtual address over the edges, round robin.
func (c *ClusterTopology) balancerRuleset() string {
	var ports, targets []string
	for _, p := range c.publicPorts {
		ports = append(ports, strconv.Itoa(p))
	}
	for i := range c.Edges {
		targets = append(targets, fmt.Sprintf("%d : %s", i, EdgeAddr(i)))
	}
	return fmt.Sprintf(`table %s {
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		ip daddr %s tcp dport { %s } dnat to numgen inc mod %d map { %s }
	}
}
`, BalancerTable, ClusterVIP, strings.Join(ports, ", "), len(c.Edges), strings.Join(targets, ", "))
}

// partitionTable is the table Partition adds in lb.
const partitionTable = "inet sallyport_partition"

// Partition cuts edge i off from the other edges and the witness: lb
// drops whatever they send each other, silently, in both directions.
// Clients and connectors still reach it. Heal undoes it.
func (c *ClusterTopology) Partition(t testing.TB, i int) {
	t.Helper()
	var others []string
	for j := range c.Edges {
		if j != i {
			others = append(others, EdgeAddr(j))
		}
	}
	if c.Witness != nil {
		others = append(others, ClusterWitnessAddr)
	}
	set := strings.Join(others, ", ")
	c.LB.Nft(t, fmt.Sprintf(`table %s {
	chain forward {
		type filter hook forward priority -10; policy accept;
		ip saddr %s ip daddr { %s } drop
		ip daddr %s ip saddr { %s } drop
	}
}
`, partitionTable, EdgeAddr(i), set, EdgeAddr(i), set))
}

// Heal removes Partition's cut.
func (c *ClusterTopology) Heal(t testing.TB) {
	t.Helper()
	c.LB.Must(t, "nft", "delete", "table", "inet", "sallyport_partition")
}
