package ingress

import (
	"cmp"
	"slices"
	"sync"
	"time"

	"github.com/sallyport/sallyport/internal/pipe"
)

// LiveConn is a client connection the edge carries now, as the admin
// dashboard lists it.
type LiveConn struct {
	Service   string
	Connector string // the connector's id
	Client    string // the client's address
	Via       string // the listener kind, as in admission.Client.Via
	Since     time.Time
	// BytesIn went from the client to the service, BytesOut back, so far.
	BytesIn, BytesOut int64
}

// liveConns is the registry of the exchanges join started and that have
// not ended. Every entry is a tracked client connection (or a WebSocket
// carried by one), so the caps bound it; join removes each when its
// exchange ends. The zero value is ready; it is safe for concurrent use.
type liveConns struct {
	state struct {
		sync.Mutex
		m map[*liveEntry]struct{}
	}
}

// liveEntry is one exchange; x is nil until its exchange has started.
type liveEntry struct {
	info LiveConn
	x    *pipe.Exchange
}

// add registers a connection whose exchange is about to start.
func (l *liveConns) add(info LiveConn) *liveEntry {
	e := &liveEntry{info: info}
	l.state.Lock()
	defer l.state.Unlock()
	if l.state.m == nil {
		l.state.m = make(map[*liveEntry]struct{})
	}
	l.state.m[e] = struct{}{}
	return e
}

// started records e's exchange, once pipe.Start has returned it (the
// exchange may have ended, and e been removed, by then).
func (l *liveConns) started(e *liveEntry, x *pipe.Exchange) {
	l.state.Lock()
	defer l.state.Unlock()
	e.x = x
}

// remove forgets e; its exchange has ended.
func (l *liveConns) remove(e *liveEntry) {
	l.state.Lock()
	defer l.state.Unlock()
	delete(l.state.m, e)
}

// list returns the live connections, oldest first, with their bytes so
// far.
func (l *liveConns) list() []LiveConn {
	l.state.Lock()
	out := make([]LiveConn, 0, len(l.state.m))
	for e := range l.state.m {
		c := e.info
		if e.x != nil {
			c.BytesIn, c.BytesOut = e.x.Bytes()
		}
		out = append(out, c)
	}
	l.state.Unlock()
	slices.SortFunc(out, func(a, b LiveConn) int {
		return cmp.Or(a.Since.Compare(b.Since), cmp.Compare(a.Client, b.Client))
	})
	return out
}

// Live lists the client connections the edge carries now, oldest first.
func (s *Set) Live() []LiveConn { return s.live.list() }
