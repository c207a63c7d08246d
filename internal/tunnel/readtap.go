package tunnel

import (
	"net"
	"sync/atomic"
	"time"
)

// readTap is the tunnel connection as the multiplexer reads it. It
// watches those reads for three ends: it stamps the time of every read
// that returns bytes, for the keepalive (keepalive.go); it follows the
// multiplexer's frames (frameTap) so that, before each read, it tells the
// streams whose frames have been handled that they are readable
// (notify.go); and it fails the read, ending the session, once the peer's
// frames break the bounds of guard.go. It is used by the multiplexer's
// single reading goroutine.
type readTap struct {
	net.Conn
	last   atomic.Int64 // unix nanoseconds of the last read with bytes
	frames frameTap
	sess   atomic.Pointer[Session] // told of readable streams, once set
	// answered counts the peer's pings answered: the batch writer adds
	// one for each answer it is given to write.
	answered atomic.Uint64
	// maxOpens is how many streams the peer may open; 0 means any.
	maxOpens uint64
	// broken holds the protocol violation that failed the reading.
	broken atomic.Pointer[error]
}

func newReadTap(c net.Conn, maxOpens uint64) *readTap {
	r := &readTap{Conn: c, maxOpens: maxOpens}
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
		if broken := r.check(); broken != nil {
			// None of these bytes reach the multiplexer, which ends
			// the session on the error.
			r.broken.Store(&broken)
			return 0, broken
		}
	}
	return n, err
}

// violation returns the protocol violation that failed the reading, if
// any.
func (r *readTap) violation() error {
	if p := r.broken.Load(); p != nil {
		return *p
	}
	return nil
}

// NetConn returns the connection the tap reads.
func (r *readTap) NetConn() net.Conn { return r.Conn }

// silentFor reports how long nothing has been read.
func (r *readTap) silentFor(now time.Time) time.Duration {
	return now.Sub(time.Unix(0, r.last.Load()))
}
