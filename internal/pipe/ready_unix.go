//go:build unix

package pipe

import (
	"errors"
	"io"
	"net"
	"os"
	"time"

	"github.com/sallyport/sallyport/internal/netpoll"
)

// readiness is the process's poller, shared by every exchange. One
// poller serves the process, as the runtime's own does: a descriptor's
// registration is independent of every other's, so a poller per owner
// would add an epoll instance, a wake pipe and a goroutine per owner and
// isolate nothing. It holds no configuration, only the registrations of
// sources at rest, and its goroutine runs only while one is registered
// (see docs/decisions.md, "Data path").
var readiness netpoll.Poller

// tcpReady is a TCP source armed one-shot in the process's poller. The
// runtime's own poller keeps its registration of the socket; the copier
// reads the descriptor directly and never parks on it, so the two do not
// interfere.
type tcpReady struct {
	*tcpSource
	ready *netpoll.Source
}

// tcpReadySource returns c as a readySource that calls fire when
// readable, or nil if it cannot be one (no poller on this platform).
func tcpReadySource(c *net.TCPConn, fire func()) readySource {
	if readiness.Open() != nil {
		return nil
	}
	ts := newTCPSource(c)
	if ts == nil {
		return nil
	}
	return &tcpReady{tcpSource: ts, ready: readiness.Source(ts.rc, fire)}
}

func (t *tcpReady) conn() net.Conn { return t.c }
func (t *tcpReady) arm() error     { return t.ready.Arm() }
func (t *tcpReady) disarm()        { t.ready.Close() }

// read reads what the socket holds, into bp or a newly borrowed buffer,
// waiting at most wait (see readySource): parked in the runtime's poller
// with no buffer held, or not at all.
func (t *tcpReady) read(bp *[]byte, wait time.Duration) (_ *[]byte, n int, err error, again bool) {
	if wait > 0 {
		t.c.SetReadDeadline(time.Now().Add(wait))
		bp, n, err := t.Read(bp)
		t.c.SetReadDeadline(time.Time{})
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return bp, 0, nil, true // bp is nil: Read gives it back before it parks
		}
		return bp, n, err, false
	}
	t.bp, t.n, t.err = bp, 0, nil
	t.again = false
	if err := t.rc.Control(t.try); err != nil {
		return t.bp, 0, err, false // closed
	}
	switch {
	case t.again:
		return nil, 0, nil, true
	case t.err != nil:
		return t.bp, 0, t.opError(), false
	case t.n == 0:
		return t.bp, 0, io.EOF, false
	}
	return t.bp, t.n, nil, false
}
