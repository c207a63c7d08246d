//go:build linux

package wanlink

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/sallyport/sallyport/internal/nsenter"
)

// Addresses of the three hosts, from 198.18.0.0/15 (the benchmarking
// range) only, and apart from internal/netns's 198.18.1.0/24 and
// 198.18.2.0/24.
const (
	FarAddr        = "198.19.1.2" // the far host: clients and the edge
	RouterFarAddr  = "198.19.1.1" // the router on the far side
	RouterSiteAddr = "198.19.2.1" // the router on the site side
	SiteAddr       = "198.19.2.2" // the site host: the connector and back-ends
)

// Interface names; each lives in its own namespace.
const (
	ifFar        = "veth-far"
	ifRouterFar  = "veth-r-far"
	ifRouterSite = "veth-r-site"
	ifSite       = "veth-site"
)

// direction is one way across the link: the router's veth it enters by,
// the TUN device of its delayer, and the policy-routing table that sends
// what enters by that veth into that TUN device.
type direction struct {
	from, tun, table string
}

var (
	toSite = direction{from: ifRouterFar, tun: "wan-to-site", table: "100"}
	toFar  = direction{from: ifRouterSite, tun: "wan-to-far", table: "101"}
)

// NamePrefix starts every namespace this package creates; the creating
// process's pid follows, so that RemoveStale can tell what a killed run
// left behind. It is internal/netns's prefix too, so either's stale
// clean-up removes both's leftovers.
const NamePrefix = "sallyport-"

// Tools are the programs Start runs (iproute2's ip and tc).
var Tools = []string{"ip", "tc"}

// TCPBufferMax is what TCP's send and receive buffers may grow to in far
// and site (net.ipv4.tcp_rmem and tcp_wmem, per namespace): enough for a
// window of about 2 × 1 Gbit/s × 100 ms, as on a host tuned for a long
// fat network. The kernel's default (6 MiB receive, 4 MiB send) would cap
// one TCP connection at 50 ms to well below 1 Gbit/s.
const TCPBufferMax = 32 << 20

// Host is one network namespace of a Link. Its methods are safe for
// concurrent use.
type Host struct {
	Name string // the namespace's name under /run/netns
	Role string // far, router or site
	Addr string // the host's address ("" for the router, which has two)
}

// Do runs fn on an OS thread inside the host's namespace (nsenter.Do): the
// sockets fn opens belong to the host.
func (h *Host) Do(fn func() error) error { return nsenter.Do(h.Name, fn) }

// Command returns a command that runs argv in the host's namespace; its
// pid is argv's own.
func (h *Host) Command(ctx context.Context, argv ...string) *exec.Cmd {
	return nsenter.Command(ctx, h.Name, argv...)
}

// Run runs argv in the host's namespace to completion and returns its
// standard output; the error carries its standard error.
func (h *Host) Run(ctx context.Context, argv ...string) (string, error) {
	out, err := h.Command(ctx, argv...).Output()
	if err != nil {
		var stderr []byte
		if ee, ok := errors.AsType[*exec.ExitError](err); ok {
			stderr = ee.Stderr
		}
		return string(out), fmt.Errorf("in %s: %s: %w: %s", h.Role, strings.Join(argv, " "), err, strings.TrimSpace(string(stderr)))
	}
	return string(out), nil
}

// writeSysctl sets a sysctl of the host's namespace, such as
// "net/ipv4/ip_forward", by writing /proc/sys from inside it.
func (h *Host) writeSysctl(key, value string) error {
	return h.Do(func() error {
		if err := os.WriteFile(filepath.Join("/proc/sys", key), []byte(value), 0); err != nil {
			return fmt.Errorf("in %s: set %s: %w", h.Role, key, err)
		}
		return nil
	})
}

// Link is the emulated WAN link and the hosts on either side of it:
//
//	far 198.19.1.2 ── 198.19.1.1 router 198.19.2.1 ── 198.19.2.2 site
//
// Every packet between far and site crosses the router, which limits each
// direction to the rate, holds each packet for half the round-trip time
// and drops the lost fraction. Its methods are safe for concurrent use.
type Link struct {
	Far, Router, Site *Host
	Spec              Spec

	made          []*Host  // the namespaces made, to remove
	toSite, toFar *delayer // nil until started
}

// Start builds the three namespaces, their links and routes, and the
// emulated link between them; on failure it removes whatever it made.
// Close removes it all. Start needs root and Tools.
func Start(spec Spec) (*Link, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	id := make([]byte, 3)
	rand.Read(id)
	prefix := NamePrefix + strconv.Itoa(os.Getpid()) + "-" + hex.EncodeToString(id) + "-wan"
	l := &Link{
		Far:    &Host{Name: prefix + "-far", Role: "far", Addr: FarAddr},
		Router: &Host{Name: prefix + "-router", Role: "router"},
		Site:   &Host{Name: prefix + "-site", Role: "site", Addr: SiteAddr},
		Spec:   spec,
	}
	if err := l.build(); err != nil {
		if rerr := l.Close(); rerr != nil {
			err = fmt.Errorf("%w (and removing what was made: %v)", err, rerr)
		}
		return nil, err
	}
	return l, nil
}

// build makes the link, noting in l what Close must remove as it goes.
func (l *Link) build() error {
	for _, h := range []*Host{l.Far, l.Router, l.Site} {
		if err := host("ip", "netns", "add", h.Name); err != nil {
			return err
		}
		l.made = append(l.made, h)
	}
	if err := l.wire(); err != nil {
		return err
	}
	var err error
	if l.toSite, err = l.delay(toSite); err != nil {
		return err
	}
	if l.toFar, err = l.delay(toFar); err != nil {
		return err
	}
	return l.route()
}

// step is one thing build does: run argv in h's namespace (in this
// process's own when h is nil), or, with key set, set h's sysctl key
// (such as "net/ipv4/ip_forward") to value.
type step struct {
	h          *Host
	argv       []string
	key, value string
}

// run does the steps in order, each within 30s, until one fails.
func run(steps []step) error {
	for _, s := range steps {
		var err error
		switch {
		case s.key != "":
			err = s.h.writeSysctl(s.key, s.value)
		case s.h == nil:
			err = host(s.argv...)
		default:
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			_, err = s.h.Run(ctx, s.argv...)
			cancel()
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// wire joins far and site to the router with veth pairs and gives them
// addresses, routes and TCP buffers.
func (l *Link) wire() error {
	far, r, site := l.Far, l.Router, l.Site
	rmem := fmt.Sprintf("4096 131072 %d", TCPBufferMax)
	wmem := fmt.Sprintf("4096 16384 %d", TCPBufferMax)
	return run([]step{
		{argv: []string{"ip", "link", "add", ifFar, "netns", far.Name, "type", "veth", "peer", "name", ifRouterFar, "netns", r.Name}},
		{argv: []string{"ip", "link", "add", ifSite, "netns", site.Name, "type", "veth", "peer", "name", ifRouterSite, "netns", r.Name}},
		{h: far, argv: []string{"ip", "addr", "add", FarAddr + "/24", "dev", ifFar}},
		{h: r, argv: []string{"ip", "addr", "add", RouterFarAddr + "/24", "dev", ifRouterFar}},
		{h: r, argv: []string{"ip", "addr", "add", RouterSiteAddr + "/24", "dev", ifRouterSite}},
		{h: site, argv: []string{"ip", "addr", "add", SiteAddr + "/24", "dev", ifSite}},
		{h: far, argv: []string{"ip", "link", "set", ifFar, "up"}},
		{h: r, argv: []string{"ip", "link", "set", ifRouterFar, "up"}},
		{h: r, argv: []string{"ip", "link", "set", ifRouterSite, "up"}},
		{h: site, argv: []string{"ip", "link", "set", ifSite, "up"}},
		{h: far, argv: []string{"ip", "link", "set", "lo", "up"}},
		{h: r, argv: []string{"ip", "link", "set", "lo", "up"}},
		{h: site, argv: []string{"ip", "link", "set", "lo", "up"}},
		{h: far, argv: []string{"ip", "route", "add", "default", "via", RouterFarAddr}},
		{h: site, argv: []string{"ip", "route", "add", "default", "via", RouterSiteAddr}},
		{h: far, key: "net/ipv4/tcp_rmem", value: rmem},
		{h: far, key: "net/ipv4/tcp_wmem", value: wmem},
		{h: site, key: "net/ipv4/tcp_rmem", value: rmem},
		{h: site, key: "net/ipv4/tcp_wmem", value: wmem},
	})
}

// delay creates dir's TUN device in the router and starts its delayer.
func (l *Link) delay(dir direction) (*delayer, error) {
	var tun *os.File
	err := l.Router.Do(func() error {
		var err error
		tun, err = openTUN(dir.tun)
		return err
	})
	if err != nil {
		return nil, err
	}
	return newDelayer(tun, l.Spec.RTT/2, l.Spec.bufferBytes(), l.Spec.lossSteps()), nil
}

// route makes the router a router whose every forwarded packet goes
// through a delayer's TUN device first: what arrives by either veth is
// routed (by its direction's table) into its direction's TUN device,
// whose queue is limited to the rate; and what the delayer writes back is
// routed by the main table out of the other veth. Reverse path filtering
// is off, as packets come back from the TUN devices with addresses that
// belong behind the veths.
func (l *Link) route() error {
	r := l.Router
	steps := []step{
		{h: r, key: "net/ipv4/ip_forward", value: "1"},
		{h: r, key: "net/ipv4/conf/all/rp_filter", value: "0"},
		{h: r, key: "net/ipv4/conf/default/rp_filter", value: "0"},
		{h: r, key: "net/ipv4/conf/" + ifRouterFar + "/rp_filter", value: "0"},
		{h: r, key: "net/ipv4/conf/" + ifRouterSite + "/rp_filter", value: "0"},
	}
	for i, dir := range []direction{toSite, toFar} {
		steps = append(steps,
			step{h: r, key: "net/ipv4/conf/" + dir.tun + "/rp_filter", value: "0"},
			step{h: r, argv: []string{"ip", "link", "set", dir.tun, "up", "txqueuelen", "10000"}},
			step{h: r, argv: []string{"ip", "route", "add", "default", "dev", dir.tun, "table", dir.table}},
			step{h: r, argv: []string{"ip", "rule", "add", "iif", dir.from, "lookup", dir.table, "pref", strconv.Itoa(100 + i)}})
		if q := l.Spec.qdisc(dir.tun); q != nil {
			steps = append(steps, step{h: r, argv: q})
		}
	}
	return run(steps)
}

// Close stops the delayers and removes the namespaces, every process
// left in them killed by pid first. It returns every error; it is safe to
// call once.
func (l *Link) Close() error {
	var errs []error
	for _, d := range []*delayer{l.toSite, l.toFar} {
		if d != nil {
			errs = append(errs, d.Close())
		}
	}
	for _, h := range l.made {
		errs = append(errs, nsenter.Remove(h.Name))
	}
	return errors.Join(errs...)
}

// Stats returns the counters of the delayers of each direction: from far
// to site, and from site to far.
func (l *Link) Stats() (toSite, toFar Stats) { return l.toSite.stats(), l.toFar.stats() }

// RemoveStale removes the namespaces that an earlier run left behind
// because it was killed before it could close its link (see
// nsenter.RemoveStale).
func RemoveStale(logf func(format string, args ...any)) error {
	return nsenter.RemoveStale(NamePrefix, logf)
}

// host runs argv in this process's own namespace.
func host(argv ...string) error {
	if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// bufferBytes is the delayer's buffer: twice the bandwidth-delay product,
// as a router's buffer, but at least 4 MiB, so that bursts of 64 KiB
// super-packets fit on a slow link, and at most 256 MiB; 64 MiB without
// a rate.
func (s Spec) bufferBytes() int {
	b := 2 * s.bdp()
	if s.Rate == 0 {
		b = 64 << 20
	}
	return int(min(max(b, 4<<20), 256<<20))
}

// qdisc returns the tc command that limits dev's egress to the rate (nil
// without a rate): a token bucket whose queue holds one bandwidth-delay
// product (the classic router buffer), at least 256 KiB.
func (s Spec) qdisc(dev string) []string {
	if s.Rate == 0 {
		return nil
	}
	burst := max(s.Rate/8/1000, 64<<10) // 1 ms at the rate, and a whole super-packet
	limit := max(s.bdp(), 256<<10)
	return []string{"tc", "qdisc", "add", "dev", dev, "root", "tbf",
		"rate", strconv.FormatInt(s.Rate, 10) + "bit",
		"burst", strconv.FormatInt(burst, 10),
		"limit", strconv.FormatInt(limit, 10)}
}

// Dial opens a connection from the host, as a program on it would.
func (h *Host) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := nsenter.Dial(ctx, h.Name, network, addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s from %s: %w", addr, h.Role, err)
	}
	return c, nil
}

// Listen opens a listener on the host; the caller closes it.
func (h *Host) Listen(network, addr string) (net.Listener, error) {
	l, err := nsenter.Listen(h.Name, network, addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s in %s: %w", addr, h.Role, err)
	}
	return l, nil
}
