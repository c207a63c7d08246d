package tunnel

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// tap is the tunnel connection as the multiplexer sees it.
//
// Reading, it stamps the time of every read that returns bytes, for the
// keepalive (keepalive.go); it follows the multiplexer's frames
// (frameTap) so that, before each read, it tells the streams whose frames
// have been handled that they are readable (notify.go); and it fails the
// read, ending the session, once the peer's frames break the bounds of
// guard.go. Read is called by the multiplexer's single receiving
// goroutine.
//
// Writing, it hands each of the multiplexer's messages (go-yamux writes a
// frame's header and body with one Write) to the connection with the TLS
// records gathered into one system call (transport.go); it takes a write
// that times out for a peer that has stopped reading (the multiplexer
// gives each write a deadline of the keepalive timeout); and it counts
// the ping answers and notes the go-away it writes. Write is called by
// the multiplexer's single sending goroutine.
type tap struct {
	net.Conn
	tr *Transport // beneath the connection's TLS, if any

	last   atomic.Int64 // unix nanoseconds of the last read with bytes
	frames frameTap
	// handled counts the peer's frames the multiplexer has handled.
	handled atomic.Uint64
	sess    atomic.Pointer[Session] // told of readable streams, once set
	// refuseOpens is set on the edge: a connector opens no stream.
	refuseOpens bool
	// broken holds the protocol violation that failed the reading.
	broken atomic.Pointer[error]

	// answered counts the ping answers written; written the messages.
	answered, written atomic.Uint64
	// stalled holds the error of a write to a peer that stopped reading.
	stalled atomic.Pointer[error]
	// goneAway is closed once a go-away has been written.
	goneAway chan struct{}
	goneOnce sync.Once
	// spoke is closed once the multiplexer has handled a frame of the
	// peer's (see Server); spoken records that, for the reader.
	spoke  chan struct{}
	spoken bool
}

func newTap(c net.Conn, refuseOpens bool) *tap {
	t := &tap{Conn: c, tr: transportOf(c), refuseOpens: refuseOpens, goneAway: make(chan struct{}), spoke: make(chan struct{})}
	t.last.Store(time.Now().UnixNano())
	return t
}

func (t *tap) Read(b []byte) (int, error) {
	// The multiplexer asks for more bytes only once it has handled every
	// frame that came whole in the bytes before.
	t.handled.Store(t.frames.n)
	if t.frames.n > 0 && !t.spoken {
		t.spoken = true
		close(t.spoke)
	}
	if len(t.frames.done) > 0 {
		if s := t.sess.Load(); s != nil {
			s.readable(t.frames.done)
			t.frames.done = t.frames.done[:0]
		}
	}
	n, err := t.Conn.Read(b)
	if n > 0 {
		t.last.Store(time.Now().UnixNano())
		t.frames.feed(b[:n])
		if broken := t.check(); broken != nil {
			// None of these bytes reach the multiplexer, which ends
			// the session on the error.
			t.broken.Store(&broken)
			return 0, broken
		}
	}
	return n, err
}

func (t *tap) Write(b []byte) (int, error) {
	if t.tr != nil {
		t.tr.cork()
	}
	n, err := t.Conn.Write(b)
	if t.tr != nil {
		if uerr := t.tr.uncork(); err == nil {
			err = uerr
		}
	}
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			stalled := fmt.Errorf("%w: %w", ErrPeerNotReading, err)
			t.stalled.CompareAndSwap(nil, &stalled)
		}
		return n, err
	}
	t.written.Add(1)
	if len(b) == muxHeaderSize {
		switch {
		case b[1] == muxTypePing && b[3]&muxFlagACK != 0:
			t.answered.Add(1)
		case b[1] == muxTypeGoAway:
			t.goneOnce.Do(func() { close(t.goneAway) })
		}
	}
	return n, nil
}

// Close closes the connection; beneath TLS if the peer is at fault (see
// abort).
func (t *tap) Close() error {
	if t.fault() != nil {
		return abort(t.Conn)
	}
	return t.Conn.Close()
}

// fault returns what the reading or the writing found wrong with the
// peer, if anything.
func (t *tap) fault() error {
	if p := t.broken.Load(); p != nil {
		return *p
	}
	if p := t.stalled.Load(); p != nil {
		return *p
	}
	return nil
}

// NetConn returns the connection the tap reads and writes.
func (t *tap) NetConn() net.Conn { return t.Conn }

// silentFor reports how long nothing has been read.
func (t *tap) silentFor(now time.Time) time.Duration {
	return now.Sub(time.Unix(0, t.last.Load()))
}
