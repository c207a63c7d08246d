// Package openings bounds the tunnel port's connections that have not
// yet said who they are: strangers can open them, so they are counted in
// all and per source address, and at a bound the oldest is shed.
//
//	set := openings.New(1024, 32)
//	if old := set.Admit(c); old != nil {
//		old.Close()
//	}
//	... TLS handshake, first message ...
//	if !set.Done(c) { // shed meanwhile: act on nothing it asked
//		c.Close()
//	}
package openings

import (
	"net"
	"net/netip"
	"sync"
	"time"
)

// Openings on the tunnel port: a connection is in its opening from accept
// until its first message has been read (TLS handshake, then a hello, an
// enrollment or a renewal). Strangers can hold openings, so they are
// bounded in all (config.TunnelOpenings) and per source address
// (tunnel.openings_per_source); at a bound the oldest opening is shed, not the
// newest, so a flood of silent connections cannot lock a connector out:
// its fresh connection pushes out the flood's stale ones. And the first
// TLS record must come within FirstRecordTimeout.
const FirstRecordTimeout = 2 * time.Second

// Set tracks the tunnel-port connections in their opening. Its methods
// are safe for concurrent use.
type Set struct {
	// Max bounds the openings in all, PerSource those of one source
	// address; 0: no bound.
	Max, PerSource int

	state struct {
		sync.Mutex
		conns    map[net.Conn]opening
		bySource map[netip.Addr]int
		next     uint64 // order of arrival
	}
}

type opening struct {
	ip  netip.Addr
	seq uint64
}

// New returns a Set with those bounds.
func New(max, perSource int) *Set {
	o := &Set{Max: max, PerSource: perSource}
	o.state.conns = make(map[net.Conn]opening)
	o.state.bySource = make(map[netip.Addr]int)
	return o
}

// Admit records c's opening. If that passes a bound, it first sheds the
// oldest opening (of c's source when that source is at its bound, else of
// all), which it returns for the caller to close; nil when none is shed.
func (o *Set) Admit(c net.Conn) (shed net.Conn) {
	ip := RemoteIP(c)
	o.state.Lock()
	defer o.state.Unlock()
	switch {
	case o.PerSource > 0 && o.state.bySource[ip] >= o.PerSource:
		shed = o.oldestLocked(func(op opening) bool { return op.ip == ip })
	case o.Max > 0 && len(o.state.conns) >= o.Max:
		shed = o.oldestLocked(func(opening) bool { return true })
	}
	if shed != nil {
		o.removeLocked(shed)
	}
	o.state.next++
	o.state.conns[c] = opening{ip: ip, seq: o.state.next}
	o.state.bySource[ip]++
	return shed
}

// Done ends c's opening, and reports false if c was shed meanwhile (its
// shedder closes it): then nothing c asked for may be acted on. Once Done
// has returned true, c can no longer be shed.
func (o *Set) Done(c net.Conn) bool {
	o.state.Lock()
	defer o.state.Unlock()
	return o.removeLocked(c)
}

// removeLocked forgets c's opening, and reports whether it was there.
func (o *Set) removeLocked(c net.Conn) bool {
	op, ok := o.state.conns[c]
	if !ok {
		return false
	}
	delete(o.state.conns, c)
	if o.state.bySource[op.ip]--; o.state.bySource[op.ip] <= 0 {
		delete(o.state.bySource, op.ip)
	}
	return true
}

// oldestLocked returns the oldest opening that match accepts.
func (o *Set) oldestLocked(match func(opening) bool) net.Conn {
	var oldest net.Conn
	var seq uint64
	for c, op := range o.state.conns {
		if match(op) && (oldest == nil || op.seq < seq) {
			oldest, seq = c, op.seq
		}
	}
	return oldest
}

// RemoteIP is a connection's remote IP address, unmapped, without zone.
func RemoteIP(c net.Conn) netip.Addr {
	if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
		return ap.Addr().Unmap().WithZone("")
	}
	return netip.Addr{}
}

// FirstRecordConn lifts the read deadline once the connection's first
// bytes (a TLS ClientHello) have come: the caller sets one of
// FirstRecordTimeout before the handshake, and the rest of the handshake
// waits as long as the caller's own bound says.
type FirstRecordConn struct {
	net.Conn
	seen bool // read by one goroutine at a time, as TLS does
}

func (c *FirstRecordConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 && !c.seen {
		c.seen = true
		c.Conn.SetReadDeadline(time.Time{})
	}
	return n, err
}
