package tunnel

import (
	"net"
	"sync/atomic"
	"time"

	"github.com/sallyport/sallyport/internal/wire"
)

// Liveness: each side writes a ping on the control stream every
// KeepaliveInterval, and closes the session once it has received nothing
// at all (no data, no ping) for KeepaliveTimeout. Any byte from the peer
// proves it alive, so a busy tunnel needs no ping round trip, and a ping
// stuck behind bulk data on a slow link does not count against the peer.
// yamux's own keepalive is off: it fails the session when one ping waits
// longer than its write timeout, which bulk traffic alone can cause.

// liveConn stamps the time of every read that returns bytes. It also
// follows the multiplexer's frames (see frameTap) and, before each read,
// tells the streams whose frames have been handled (readable).
type liveConn struct {
	net.Conn
	last atomic.Int64 // unix nanoseconds of the last read with bytes
	tap  frameTap
	sess atomic.Pointer[Session] // told of readable streams, once set
}

func newLiveConn(c net.Conn) *liveConn {
	lc := &liveConn{Conn: c}
	lc.last.Store(time.Now().UnixNano())
	return lc
}

func (c *liveConn) Read(b []byte) (int, error) {
	// Not in the middle of a data frame's body: yamux reads it holding
	// the stream's receive lock. Between frames it holds none.
	if len(c.tap.done) > 0 && c.tap.body == 0 {
		if s := c.sess.Load(); s != nil {
			s.readable(c.tap.done)
			c.tap.done = c.tap.done[:0]
		}
	}
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.last.Store(time.Now().UnixNano())
		c.tap.feed(b[:n])
	}
	return n, err
}

// silentFor reports how long nothing has been read.
func (c *liveConn) silentFor(now time.Time) time.Duration {
	return now.Sub(time.Unix(0, c.last.Load()))
}

// keepalive closes the session once the peer has been silent for timeout,
// and asks the pinger for a ping every interval. It runs until the
// session ends.
func (s *Session) keepalive(interval, timeout time.Duration) {
	defer s.wg.Done()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case now := <-t.C:
			if silent := s.live.silentFor(now); silent >= timeout {
				s.deadPeer.Store(true)
				s.end()
				return
			}
			s.sweepSoon()
			select {
			case s.pingNow <- struct{}{}:
			default: // the last ping is still being written
			}
		}
	}
}

// pinger writes the pings that keepalive asks for. A ping is written by
// its own goroutine because the write may wait behind bulk data, and the
// silence check must go on meanwhile.
func (s *Session) pinger() {
	defer s.wg.Done()
	for {
		select {
		case <-s.done:
			return
		case <-s.pingNow:
			s.writeControl(wire.Control{Type: wire.ControlPing})
		}
	}
}

// PeerSilent reports whether the session ended because the peer went
// silent for longer than the keepalive timeout.
func (s *Session) PeerSilent() bool { return s.deadPeer.Load() }
