package ingress

import (
	"net"
	"net/netip"
	"sync"

	"github.com/sallyport/sallyport/internal/loglimit"
)

// caps bounds the client connections the edge holds: in all, and from one
// source address, so that clients that connect and then neither speak nor
// read cannot make the edge hold unbounded memory (each tunneled
// connection may buffer up to a stream window). Its methods are safe for
// concurrent use.
type caps struct {
	max, perSource int // 0: no bound

	state struct {
		sync.Mutex
		conns    map[net.Conn]netip.Addr // the connections counted, by conn
		bySource map[netip.Addr]int
	}
	// said makes the refusals' log one line a second.
	said loglimit.Limiter
}

func newCaps(max, perSource int) *caps {
	c := &caps{max: max, perSource: perSource}
	c.state.conns = make(map[net.Conn]netip.Addr)
	c.state.bySource = make(map[netip.Addr]int)
	return c
}

// take counts c and reports true, or reports false (counting nothing) with
// which bound it would pass: "edge" or "source".
func (c *caps) take(conn net.Conn) (ok bool, which string) {
	ip := sourceIP(conn)
	c.state.Lock()
	defer c.state.Unlock()
	switch {
	case c.max > 0 && len(c.state.conns) >= c.max:
		return false, "edge"
	case c.perSource > 0 && c.state.bySource[ip] >= c.perSource:
		return false, "source"
	}
	c.state.conns[conn] = ip
	c.state.bySource[ip]++
	return true, ""
}

// put stops counting conn; a conn take did not count is ignored.
func (c *caps) put(conn net.Conn) {
	c.state.Lock()
	defer c.state.Unlock()
	ip, ok := c.state.conns[conn]
	if !ok {
		return
	}
	delete(c.state.conns, conn)
	if c.state.bySource[ip]--; c.state.bySource[ip] <= 0 {
		delete(c.state.bySource, ip)
	}
}

// sourceIP is a connection's remote IP address, unmapped, without zone.
func sourceIP(c net.Conn) netip.Addr {
	if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
		return ap.Addr().Unmap().WithZone("")
	}
	return netip.Addr{}
}
