//go:build linux

// Package netns proves sallyport's promise in real Linux network namespaces:
// it builds three throwaway hosts, an outside network, a DMZ and a trusted
// network (and a proxy host with AddProxyHost), wires them with veth pairs, routes them, fences them with
// nftables, runs real processes in them and dials from them. Everything it
// makes is removed when the test ends, even when the test fails.
//
//	topo := netns.New(t)                 // skips loudly when not root or a tool is missing
//	topo.Fence(t, 5500, []int{8080})     // nftables in dmz and trusted
//	p := topo.Trusted.Start(t, "redis", "redis-server", "--port", "6380")
//	conn, err := topo.Outside.Dial(ctx, "198.18.1.1:8080")
//
// The layout (addresses from 198.18.0.0/15, the benchmarking range, only):
//
//	outside 198.18.1.2 ── 198.18.1.1 dmz 198.18.2.1 ── 198.18.2.2 trusted
//
// The DMZ forwards between its two links like a router, so outside has a
// route to trusted: the only thing that keeps outside (and the DMZ) from
// opening a connection into trusted is trusted's own firewall, as in the
// deployment sallyport is built for.
//
// The helpers need root, iproute2 (ip, ss) and nftables (nft); Missing
// reports what is absent so that a test can skip with a loud message.
package netns

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/nsenter"
)

// Addresses of the three hosts.
const (
	OutsideAddr    = "198.18.1.2" // the outside host, where clients run
	DMZOutsideAddr = "198.18.1.1" // the DMZ on the outside link: where clients reach the edge
	DMZTrustedAddr = "198.18.2.1" // the DMZ on the trusted link: where the connector reaches the edge
	TrustedAddr    = "198.18.2.2" // the trusted host, where the connector and back-ends run
)

// OutsideReceiveBufferMax caps the TCP receive buffers in outside.
const OutsideReceiveBufferMax = 1 << 20

// Interface names; each lives in its own namespace, so they need not be
// unique on the machine.
const (
	ifOutside = "veth-out"
	ifDMZOut  = "veth-dmz-out"
	ifDMZTr   = "veth-dmz-tr"
	ifTrusted = "veth-tr"
)

// namePrefix starts every namespace this package creates; the creating
// process's pid follows, so a later run can remove what a killed run left.
const namePrefix = "sallyport-"

// Tools are the programs the topology itself needs.
var Tools = []string{"ip", "nft", "ss"}

// Missing returns why the namespace tests cannot run here ("" when they
// can): not root, or some of the tools (Tools plus extra) are not on PATH.
func Missing(extra ...string) string {
	var why []string
	if os.Geteuid() != 0 {
		why = append(why, "not root")
	}
	var missing []string
	for _, tool := range append(append([]string{}, Tools...), extra...) {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		why = append(why, "missing "+strings.Join(missing, ", ")+" (install the packages in .ci/packages.txt)")
	}
	return strings.Join(why, "; ")
}

// Required reports whether the namespace tests must run here: the
// environment variable CI is true (CI=true, as CI services set it). A CI
// run that cannot build the namespaces must fail, never skip: a skipped
// suite would pass the firewall promise unchecked.
func Required() bool {
	ci, err := strconv.ParseBool(os.Getenv("CI"))
	return err == nil && ci
}

// SkipIfMissing skips t, loudly, when why (from Missing) is not empty, or
// fails it when Required: what is missing is named either way.
func SkipIfMissing(t testing.TB, why string) {
	t.Helper()
	if why == "" {
		return
	}
	if Required() {
		t.Fatal("CI=true, so the network-namespace tests must run, but they cannot: " + why)
	}
	t.Skip("NOT RUN: the network-namespace tests need root, iproute2, nftables and the packages in .ci/packages.txt: " + why)
}

// Topology is the three hosts of one test. Its methods may be called from
// several goroutines; each namespace is removed by the test's cleanup.
type Topology struct {
	Outside, DMZ, Trusted *Namespace
}

// New creates the three namespaces, their links, addresses and routes, and
// registers their removal (every process in them killed by pid first) with
// t.Cleanup. When Missing reports a reason it skips the test, loudly, or
// fails it when Required.
func New(t testing.TB) *Topology {
	t.Helper()
	SkipIfMissing(t, Missing())
	RemoveStale(t)
	id := make([]byte, 3)
	rand.Read(id)
	run := namePrefix + strconv.Itoa(os.Getpid()) + "-" + hex.EncodeToString(id)
	topo := &Topology{
		Outside: &Namespace{Name: run + "-outside", Role: "outside", Addr: OutsideAddr},
		DMZ:     &Namespace{Name: run + "-dmz", Role: "dmz", Addr: DMZOutsideAddr},
		Trusted: &Namespace{Name: run + "-trusted", Role: "trusted", Addr: TrustedAddr},
	}
	for _, n := range []*Namespace{topo.Outside, topo.DMZ, topo.Trusted} {
		host(t, "ip", "netns", "add", n.Name)
		t.Cleanup(func() { n.remove(t) })
		n.Must(t, "ip", "link", "set", "lo", "up")
	}
	host(t, "ip", "link", "add", ifOutside, "netns", topo.Outside.Name, "type", "veth",
		"peer", "name", ifDMZOut, "netns", topo.DMZ.Name)
	host(t, "ip", "link", "add", ifTrusted, "netns", topo.Trusted.Name, "type", "veth",
		"peer", "name", ifDMZTr, "netns", topo.DMZ.Name)
	for _, a := range []struct {
		n         *Namespace
		dev, addr string
	}{
		{topo.Outside, ifOutside, OutsideAddr},
		{topo.DMZ, ifDMZOut, DMZOutsideAddr},
		{topo.DMZ, ifDMZTr, DMZTrustedAddr},
		{topo.Trusted, ifTrusted, TrustedAddr},
	} {
		a.n.Must(t, "ip", "addr", "add", a.addr+"/24", "dev", a.dev)
		a.n.Must(t, "ip", "link", "set", a.dev, "up")
	}
	topo.Outside.Must(t, "ip", "route", "add", "default", "via", DMZOutsideAddr)
	topo.Trusted.Must(t, "ip", "route", "add", "default", "via", DMZTrustedAddr)
	topo.DMZ.Must(t, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward")
	// Clients' receive buffers may grow to OutsideReceiveBufferMax only
	// (this machine's default lets them reach 32 MiB): so the bytes that a
	// slow client has not read yet stay on the tunnel's side of the edge,
	// whatever the kernel's defaults are.
	topo.Outside.Must(t, "sh", "-c", fmt.Sprintf("echo 4096 131072 %d > /proc/sys/net/ipv4/tcp_rmem", OutsideReceiveBufferMax))
	return topo
}

// AddOutsideAddrs gives the outside host count more addresses on its
// link, 198.18.1.100 onwards, and returns them: clients (or attackers)
// that the DMZ tells apart by address. They go when the namespace does.
func (topo *Topology) AddOutsideAddrs(t testing.TB, count int) []netip.Addr {
	t.Helper()
	if count > 150 {
		t.Fatalf("AddOutsideAddrs: %d addresses; the link's /24 has room for 150 from .100", count)
	}
	var addrs []netip.Addr
	var batch strings.Builder
	for i := range count {
		a := netip.AddrFrom4([4]byte{198, 18, 1, byte(100 + i)})
		addrs = append(addrs, a)
		fmt.Fprintf(&batch, "addr add %s/24 dev %s\n", a, ifOutside)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := topo.Outside.RunInput(ctx, []byte(batch.String()), "ip", "-batch", "-"); err != nil {
		t.Fatalf("add addresses to outside: %v", err)
	}
	return addrs
}

// Fence loads the firewalls. In trusted: no new inbound connection from
// anywhere (only loopback and established/related traffic comes in), and
// out only to the edge's tunnel port on the DMZ, plus loopback. In the DMZ:
// inbound only to the edge's tunnel port and its public ports, plus
// loopback and established/related; forwarding is left open, so trusted's
// firewall alone keeps outside out.
func (topo *Topology) Fence(t testing.TB, tunnelPort int, publicPorts []int) {
	t.Helper()
	topo.Trusted.Nft(t, TrustedRuleset(tunnelPort))
	topo.DMZ.Nft(t, DMZRuleset(tunnelPort, publicPorts))
}

// FenceTable is the nftables table that Fence loads in dmz and trusted.
const FenceTable = "inet sallyport"

// TrustedRuleset is the nftables ruleset of the trusted host.
func TrustedRuleset(tunnelPort int) string { return trustedRuleset(tunnelPort, true, true) }

// trustedRuleset is trusted's ruleset with either chain optionally left
// open (policy accept, no rules), to show what each does alone.
func trustedRuleset(tunnelPort int, input, output bool) string {
	in := `type filter hook input priority filter; policy accept;`
	if input {
		in = `type filter hook input priority filter; policy drop;
		iif "lo" accept
		ct state established,related accept
		counter drop`
	}
	out := `type filter hook output priority filter; policy accept;`
	if output {
		out = fmt.Sprintf(`type filter hook output priority filter; policy drop;
		oif "lo" accept
		ip daddr %s tcp dport %d accept`, DMZTrustedAddr, tunnelPort)
	}
	return fmt.Sprintf(`table inet sallyport {
	chain input {
		%s
	}
	chain forward {
		type filter hook forward priority filter; policy drop;
	}
	chain output {
		%s
	}
}
`, in, out)
}

// SetTrustedFence replaces trusted's fence, atomically, with one whose
// input chain (input false) or output chain (output false) lets
// everything through; with both true it is the fence of Fence again.
func (topo *Topology) SetTrustedFence(t testing.TB, tunnelPort int, input, output bool) {
	t.Helper()
	topo.Trusted.replaceFence(t, trustedRuleset(tunnelPort, input, output))
}

// SetDMZFence replaces the DMZ's fence, atomically: with on false its
// input chain lets everything through, so that what answers on the DMZ's
// addresses is the edge's own doing; with on true it is the fence of
// Fence again.
func (topo *Topology) SetDMZFence(t testing.TB, tunnelPort int, publicPorts []int, on bool) {
	t.Helper()
	ruleset := DMZRuleset(tunnelPort, publicPorts)
	if !on {
		ruleset = `table inet sallyport {
	chain input {
		type filter hook input priority filter; policy accept;
	}
}
`
	}
	topo.DMZ.replaceFence(t, ruleset)
}

// replaceFence loads ruleset in place of the namespace's fence table, in
// one transaction.
func (n *Namespace) replaceFence(t testing.TB, ruleset string) {
	t.Helper()
	n.Nft(t, "table "+FenceTable+"\ndelete table "+FenceTable+"\n"+ruleset)
}

// InboundDropped returns how many packets trusted's fence has dropped on
// the way in (the counter of the input chain's final drop rule).
func (topo *Topology) InboundDropped(t testing.TB) int {
	t.Helper()
	out := topo.Trusted.Must(t, "nft", "list", "chain", "inet", "sallyport", "input")
	m := dropCounter.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no drop counter in trusted's input chain:\n%s", out)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

var dropCounter = regexp.MustCompile(`counter packets (\d+) bytes \d+ drop`)

// DMZRuleset is the nftables ruleset of the DMZ host.
func DMZRuleset(tunnelPort int, publicPorts []int) string {
	ports := []string{strconv.Itoa(tunnelPort)}
	for _, p := range publicPorts {
		ports = append(ports, strconv.Itoa(p))
	}
	return fmt.Sprintf(`table inet sallyport {
	chain input {
		type filter hook input priority filter; policy drop;
		iif "lo" accept
		ct state established,related accept
		tcp dport { %s } accept
	}
}
`, strings.Join(ports, ", "))
}

// faultTable is the table CutTrustedLink adds in trusted.
const faultTable = "inet sallyport_fault"

// CutTrustedLink makes the dmz↔trusted link drop every packet, silently
// (no FIN, no RST, no ICMP): an nftables table in trusted, ahead of the
// fence, drops everything that crosses trusted's veth. RestoreTrustedLink
// removes it.
func (topo *Topology) CutTrustedLink(t testing.TB) {
	t.Helper()
	topo.Trusted.Nft(t, fmt.Sprintf(`table %s {
	chain input {
		type filter hook input priority -10; policy accept;
		iifname %q drop
	}
	chain output {
		type filter hook output priority -10; policy accept;
		oifname %q drop
	}
}
`, faultTable, ifTrusted, ifTrusted))
}

// RestoreTrustedLink undoes CutTrustedLink.
func (topo *Topology) RestoreTrustedLink(t testing.TB) {
	t.Helper()
	topo.Trusted.Must(t, "nft", "delete", "table", "inet", "sallyport_fault")
}

// Namespace is one network namespace (one host) of a Topology. Its
// methods are safe for concurrent use.
type Namespace struct {
	Name string // the namespace's name under /run/netns
	Role string // outside, dmz or trusted
	Addr string // the host's main address
}

// Command returns a command that runs argv in the namespace.
func (n *Namespace) Command(ctx context.Context, argv ...string) *exec.Cmd {
	return nsenter.Command(ctx, n.Name, argv...)
}

// Run runs argv in the namespace to completion (killed when ctx ends) and
// returns its standard output; the error includes its standard error.
func (n *Namespace) Run(ctx context.Context, argv ...string) (string, error) {
	return n.RunInput(ctx, nil, argv...)
}

// RunInput is Run with stdin as the command's standard input.
func (n *Namespace) RunInput(ctx context.Context, stdin []byte, argv ...string) (string, error) {
	cmd := n.Command(ctx, argv...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String(), fmt.Errorf("in %s: %s: %w: %s", n.Role, strings.Join(argv, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// Must runs argv in the namespace within 30s and fails the test if it fails.
func (n *Namespace) Must(t testing.TB, argv ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := n.Run(ctx, argv...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Nft loads an nftables script into the namespace.
func (n *Namespace) Nft(t testing.TB, script string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := n.RunInput(ctx, []byte(script), "nft", "-f", "-"); err != nil {
		t.Fatalf("load nftables rules: %v\n%s", err, script)
	}
}

// Pids lists every process in the namespace.
func (n *Namespace) Pids() ([]int, error) { return nsenter.Pids(n.Name) }

// remove kills every process left in the namespace, by pid (never this
// test process, whose goroutines may be visiting it through Do), and
// deletes it.
func (n *Namespace) remove(t testing.TB) {
	if err := nsenter.Remove(n.Name); err != nil {
		t.Error(err)
	}
}

// RemoveStale removes the namespaces that an earlier run of these tests
// left behind because it was killed before its cleanup ran: those whose
// creating process no longer exists.
func RemoveStale(t testing.TB) {
	t.Helper()
	if err := nsenter.RemoveStale(namePrefix, t.Logf); err != nil {
		t.Fatal(err)
	}
}

// host runs a command in the test's own namespace and fails the test if it fails.
func host(t testing.TB, argv ...string) {
	t.Helper()
	if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(argv, " "), err, out)
	}
}
