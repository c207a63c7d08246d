package tunnel

import (
	"net"
	"sync/atomic"
	"time"
)

// readTap is the tunnel connection as the multiplexer reads it. It
// watches those reads for two ends: it stamps the time of every read that
// returns bytes, for the keepalive (keepalive.go), and it follows the
// multiplexer's frames (frameTap) so that, before each read, it tells the
// streams whose frames have been handled that they are readable
// (notify.go). It is used by the multiplexer's single reading goroutine.
type readTap struct {
	net.Conn
	last   atomic.Int64 // unix nanoseconds of the last read with bytes
	frames frameTap
	sess   atomic.Pointer[Session] // told of readable streams, once set
}

func newReadTap(c net.Conn) *readTap {
	r := &readTap{Conn: c}
	r.last.Store(time.Now().UnixNano())
	return r
}

func (r *readTap) Read(b []byte) (int, error) {
	// Not in the middle of a data frame's body: yamux reads it holding
	// the stream's receive lock. Between frames it holds none.
	if len(r.frames.done) > 0 && r.frames.body == 0 {
		if s := r.sess.Load(); s != nil {
			s.readable(r.frames.done)
			r.frames.done = r.frames.done[:0]
		}
	}
	n, err := r.Conn.Read(b)
	if n > 0 {
		r.last.Store(time.Now().UnixNano())
		r.frames.feed(b[:n])
	}
	return n, err
}

// silentFor reports how long nothing has been read.
func (r *readTap) silentFor(now time.Time) time.Duration {
	return now.Sub(time.Unix(0, r.last.Load()))
}
