//go:build linux

package netns_test

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/logbuf"
	"github.com/sallyport/sallyport/internal/netns"
)

// The edge's bounds on tunnel-port connections in their opening
// (internal/edge/openings.go).
const (
	maxOpenings          = 1024
	maxOpeningsPerSource = 32
)

// floodRedials is how many connections a second a flood opens again in
// place of those the edge closes: enough to keep the edge's openings full
// against its 2s deadline for a first TLS record.
const floodRedials = 50

// tunnelFlood is a stranger's flood of the edge's tunnel port.
type tunnelFlood struct {
	name      string
	sources   []netip.Addr
	perSource int
	hello     []byte // sent first, then nothing; nil for idle connections
	// While the flood runs, the edge holds between lo and hi of its
	// connections open.
	lo, hi int
}

// TestTunnelPortFlood: strangers in outside flood the edge's tunnel port
// with more connections than the edge has openings (1,024), which never
// finish their opening: 1,100 idle ones from one address, then 1,120
// that send a TLS ClientHello and stall, 28 from each of 40 addresses
// (each under the bound of 32 per address). Each flood keeps its
// connections open, opening again those the edge closes. While a flood
// holds the edge's openings, the real connector is killed and restarted
// and a new connector enrolls with a new token, at once; both open their
// tunnels at their first try, and the restarted one serves a download
// intact. When their tunnels are up the edge still holds open as many of
// the flood's connections as its bounds allow, and no more: the connectors
// got in by pushing out the flood's oldest, not after the flood had gone.
// (Before the bound per address and the shedding of the oldest, the first
// 1,024 connections of a flood held every opening for 10s and each
// connector dial was closed at once.) Then a few silent connections,
// under every bound, are closed once their first TLS record is overdue.
func TestTunnelPortFlood(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	hello, err := netns.TLSClientHello()
	if err != nil {
		t.Fatal(err)
	}
	for i, fl := range []tunnelFlood{
		{"1,100 idle connections from one address", []netip.Addr{netip.MustParseAddr(netns.OutsideAddr)}, 1100, nil,
			maxOpeningsPerSource / 2, maxOpeningsPerSource + 2},
		{"1,120 stalled ClientHellos from 40 addresses", s.Topo.AddOutsideAddrs(t, 40), 28, hello,
			maxOpenings - 24, maxOpenings + 8},
	} {
		flood := s.Topo.Outside.StartFlood(t, netns.PublicAddr(netns.TunnelPort), fl.sources, fl.perSource, fl.hello, floodRedials)
		waitFloodHeld(t, s, fl, fl.lo, fl.hi)

		downs := s.Edge.Log.Count("connector tunnel down")
		s.Connector.Kill()
		s.Edge.Log.WaitFor(t, 10*time.Second, downs+1, "connector tunnel down")
		s.RestartConnector(t)
		name := fmt.Sprintf("newcomer-%d", i+1)
		fresh := s.EnrollConnector(t, name, t.TempDir())
		s.Connector.Log.WaitFor(t, 20*time.Second, 1, "tunnel up")
		fresh.Log.WaitFor(t, 20*time.Second, 1, "tunnel up")
		n := floodHeld(t, s, fl.sources)
		dials, failed, err := flood.Dials()
		t.Logf("%s: when the restarted and the new connector's tunnels were up, the edge held %d of the flood's connections open (%d dialed, %d failed: %v)",
			fl.name, n, dials, failed, err)
		if n < fl.lo || n > fl.hi {
			t.Errorf("%s: when the restarted and the new connector's tunnels were up, the edge held %d of the flood's connections open; want %d to %d",
				fl.name, n, fl.lo, fl.hi)
		}
		// Each got in at its first try: the edge did not close its
		// connection for the flood's sake and leave it to a later one.
		if lines := s.Connector.Log.Lines("tunnel dial failed"); len(lines) > 0 {
			t.Errorf("%s: the restarted connector's first dials failed:\n%s", fl.name, strings.Join(lines, "\n"))
		}
		if lines := append(fresh.Log.Lines("enrollment attempt failed"), fresh.Log.Lines("tunnel dial failed")...); len(lines) > 0 {
			t.Errorf("%s: the new connector's first enrollment or tunnel dial failed:\n%s", fl.name, strings.Join(lines, "\n"))
		}
		if fresh.Log.Count("connector enrolled") != 1 {
			t.Errorf("%s: the new connector's tunnel is up, but it did not log its enrollment:\n%s", fl.name, fresh.Log.Tail(20))
		}

		// The download goes through the restarted connector alone.
		fresh.Kill()
		s.Edge.Log.WaitFor(t, 10*time.Second, 1, "connector tunnel down", logbuf.Field("name", name))
		d, err := s.CheckBig(60 * time.Second)
		if err != nil {
			t.Fatalf("%s: through the restarted connector: %v", fl.name, err)
		}
		t.Logf("%s: %d bytes intact through the restarted connector in %s", fl.name, d.Bytes, d.Took.Round(time.Millisecond))

		flood.Stop()
		// The edge closes the flood's connections once their far ends
		// have: the next flood starts from none.
		waitFloodHeld(t, s, fl, 0, 0)
	}

	// A few silent connections, under every bound, are closed once their
	// first TLS record is overdue (2s; the handshake's own bound is 10s).
	silent := tunnelFlood{name: "8 silent connections", sources: []netip.Addr{netip.MustParseAddr(netns.OutsideAddr)}, perSource: 8}
	flood := s.Topo.Outside.StartFlood(t, netns.PublicAddr(netns.TunnelPort), silent.sources, silent.perSource, nil, 0)
	defer flood.Stop()
	opened := time.Now()
	// Open on the client's side is not yet accepted by the edge: wait
	// until it holds them all (within their 2s), then until it has closed
	// them.
	waitFloodHeld(t, s, silent, silent.perSource, silent.perSource)
	waitFloodHeld(t, s, silent, 0, 0)
	if took := time.Since(opened); took > 5*time.Second {
		t.Errorf("the edge held silent connections open for %s; their first TLS record was due within 2s", took.Round(time.Millisecond))
	}
}

// floodHeld returns how many connections from sources to the tunnel port
// the edge holds open (ss in the DMZ: established, less those still
// waiting to be accepted).
func floodHeld(t *testing.T, s *netns.Stack, sources []netip.Addr) int {
	t.Helper()
	socks, err := s.Topo.DMZ.TCPOn(netns.TunnelPort)
	if err != nil {
		t.Fatal(err)
	}
	n, queued := 0, 0
	for _, so := range socks {
		switch so.State {
		case "LISTEN":
			queued += so.RecvQ
		case "ESTAB":
			peer, err := netip.ParseAddrPort(so.Peer)
			if err == nil && slices.Contains(sources, peer.Addr()) {
				n++
			}
		}
	}
	return max(n-queued, 0)
}

// waitFloodHeld waits until the edge holds between lo and hi of fl's
// connections open.
func waitFloodHeld(t *testing.T, s *netns.Stack, fl tunnelFlood, lo, hi int) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; {
		n := floodHeld(t, s, fl.sources)
		if lo <= n && n <= hi {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: the edge held %d of the flood's connections open for 20s; want %d to %d", fl.name, n, lo, hi)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
