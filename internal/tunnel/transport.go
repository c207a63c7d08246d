package tunnel

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sallyport/sallyport/internal/mux"
)

// Transport is a tunnel's connection beneath TLS, made so that TLS
// records travel in few, large system calls. TLS reads and writes one
// record (at most 16 KiB) at a time; on its own it would make a system
// call for each. Here reads fill a large buffer from which TLS takes its
// records, and the records of one batch of the multiplexer's frames are
// gathered and written with one call (see muxConn). Both ends wrap the
// raw connection before starting TLS:
//
//	tc := tls.Client(tunnel.NewTransport(raw), conf)
//
// A session whose TLS connection lies on a Transport uses it (see
// transportOf); any other connection works too, record by record.
//
// The read buffer is lent, not held: a tunnel at rest holds none (at
// 10,000 tunnels an edge would otherwise hold 1.25 GiB for nothing; see
// docs/cluster.md §9). A read with nothing buffered goes straight into
// TLS's own record buffer, and only when it fills that (more bytes are
// waiting) does the next read borrow a large buffer from a pool, which
// goes back as soon as TLS has taken every byte of it.
type Transport struct {
	net.Conn

	// The reading side, used under TLS's read lock, one reader at a
	// time. buf is borrowed while bytes flow, nil at rest; buf[r:w] is
	// unread. flowing is set when the last read filled what it was given.
	buf     *readBuffer
	r, w    int
	flowing bool
	// lent says whether buf is borrowed, for observers other than the
	// reader.
	lent atomic.Bool

	// mu guards corked, out and outBox.
	mu     sync.Mutex
	corked bool
	out    []byte
	// outBox holds out while it is borrowed from gatherBuffers.
	outBox *[]byte
}

// transportReadSize is how much one read of the connection may take,
// once bytes flow.
const transportReadSize = 128 << 10

// flowingRead is the least a large read must bring for the next read to
// be a large one too: more than two TLS records, so bytes are flowing.
const flowingRead = 32 << 10

// maxCorked is the largest gathering buffer given back for reuse.
const maxCorked = 2 << 20

// readBuffer is a Transport's read buffer, lent by readBuffers.
type readBuffer [transportReadSize]byte

var readBuffers = sync.Pool{New: func() any { return new(readBuffer) }}

// NewTransport wraps c.
func NewTransport(c net.Conn) *Transport { return &Transport{Conn: c} }

// Read reads into b: from the borrowed buffer if it holds bytes, else
// straight from the connection while reads come in small pieces, else
// (the last read filled b, or brought flowingRead bytes or more into a
// borrowed buffer: more is likely waiting) through a buffer borrowed for
// one large read. A read that blocks holds a borrowed buffer only if the
// bytes stopped right after such a read: it goes back with the next
// bytes, a keepalive's at the latest.
func (t *Transport) Read(b []byte) (int, error) {
	if t.r < t.w {
		return t.copyOut(b), nil
	}
	if !t.flowing || len(b) >= transportReadSize {
		n, err := t.Conn.Read(b)
		t.flowing = n == len(b)
		return n, err
	}
	if t.buf == nil {
		t.buf = readBuffers.Get().(*readBuffer)
		t.lent.Store(true)
	}
	n, err := t.Conn.Read(t.buf[:])
	t.r, t.w = 0, n
	t.flowing = n >= flowingRead
	if n == 0 {
		t.giveBack()
		return 0, err
	}
	// Bytes read come first; the error, if any, with the next read.
	return t.copyOut(b), nil
}

// copyOut moves buffered bytes into b, giving the buffer back once empty.
func (t *Transport) copyOut(b []byte) int {
	n := copy(b, t.buf[t.r:t.w])
	t.r += n
	if t.r == t.w {
		t.giveBack()
	}
	return n
}

// giveBack returns the borrowed read buffer to the pool.
func (t *Transport) giveBack() {
	if t.buf != nil {
		readBuffers.Put(t.buf)
		t.buf, t.r, t.w = nil, 0, 0
		t.lent.Store(false)
	}
}

// Write writes b, or while corked gathers it to be written on uncork.
func (t *Transport) Write(b []byte) (int, error) {
	t.mu.Lock()
	if t.corked {
		t.out = append(t.out, b...)
		t.mu.Unlock()
		return len(b), nil
	}
	t.mu.Unlock()
	return t.Conn.Write(b)
}

// cork starts gathering writes, into a buffer borrowed until uncork.
func (t *Transport) cork() {
	t.mu.Lock()
	t.corked = true
	if t.outBox == nil {
		t.outBox = gatherBuffers.Get().(*[]byte)
		t.out = (*t.outBox)[:0]
	}
	t.mu.Unlock()
}

// gatherBuffers lends the buffers that corked writes gather in: a
// Transport holds one only while it gathers a batch.
var gatherBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}

// uncork writes what was gathered, in one call as long as the peer takes
// it, and stops gathering. Each write has a deadline of timeout, and a
// write that times out having written something goes on: only a peer
// that takes nothing for timeout fails it (ErrPeerNotReading). TLS above
// never sees the timeout (a tls.Conn whose write timed out is broken for
// good).
func (t *Transport) uncork(timeout time.Duration) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.corked = false
	var err error
	if len(t.out) > 0 {
		err = writeProgressing(t.Conn, t.out, timeout)
	}
	if cap(t.out) <= maxCorked {
		*t.outBox = t.out[:0]
		gatherBuffers.Put(t.outBox)
	}
	t.out, t.outBox = nil, nil
	return err
}

// writeProgressing writes b to c in writes of at most chunk bytes (all of
// it if chunk is 0), each with a deadline of timeout: it fails only when
// the peer takes nothing for timeout.
func writeProgressing(c net.Conn, b []byte, timeout time.Duration) error {
	defer c.SetWriteDeadline(time.Time{})
	for len(b) > 0 {
		c.SetWriteDeadline(time.Now().Add(timeout))
		n, err := c.Write(b)
		b = b[n:]
		if err == nil {
			continue
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			if n > 0 {
				continue
			}
			return fmt.Errorf("%w: %w", ErrPeerNotReading, err)
		}
		return err
	}
	return nil
}

// transportOf returns the Transport beneath conn's TLS, if any.
func transportOf(conn net.Conn) *Transport {
	nc, ok := conn.(interface{ NetConn() net.Conn })
	if !ok {
		return nil
	}
	t, _ := nc.NetConn().(*Transport)
	return t
}

// muxConn is the tunnel connection as the multiplexer writes it: each
// batch of frames goes through TLS into the Transport, corked, and from
// there in one system call; a write makes progress within the keepalive
// timeout or the peer has stopped reading (ErrPeerNotReading). On a
// connection with no Transport (tests over TCP or pipes), the batch is
// written in pieces with a deadline each.
type muxConn struct {
	net.Conn
	tr      *Transport
	timeout time.Duration
}

// plainChunk is the piece a batch is written in, with a deadline each,
// on a connection with no Transport.
const plainChunk = 64 << 10

func (c *muxConn) Write(b []byte) (int, error) {
	if err := c.WriteBatch(b, nil); err != nil {
		return 0, err
	}
	return len(b), nil
}

// WriteBatch writes a, then b, through TLS and in one system call if the
// connection lies on a Transport (mux.BatchWriter).
func (c *muxConn) WriteBatch(a, b []byte) error {
	if c.tr == nil {
		for _, p := range [][]byte{a, b} {
			for off := 0; off < len(p); off += plainChunk {
				if err := writeProgressing(c.Conn, p[off:min(len(p), off+plainChunk)], c.timeout); err != nil {
					return err
				}
			}
		}
		return nil
	}
	c.tr.cork()
	_, err := c.Conn.Write(a)
	if err == nil && len(b) > 0 {
		_, err = c.Conn.Write(b)
	}
	if uerr := c.tr.uncork(c.timeout); err == nil {
		err = uerr
	}
	return err
}

// CloseFor closes the connection at the session's end
// (mux.CloserFor): beneath TLS, with no goodbye, if the peer was at fault.
func (c *muxConn) CloseFor(cause error) error {
	if fault(cause) != nil {
		return abort(c.Conn)
	}
	return c.Conn.Close()
}

// ErrPeerNotReading is the cause of a session whose peer stopped reading:
// a write to it made no progress for the keepalive timeout.
var ErrPeerNotReading = errors.New("the peer stopped reading: a write to it made no progress for the keepalive timeout")

// ErrProtocol is wrapped by the cause of a session (Session.Cause) that
// ended because the peer broke the protocol: more pings unanswered than
// a sallyport peer ever has, a connector that opens a stream, a data
// frame longer than any window, a frame the multiplexer cannot parse.
var ErrProtocol = mux.ErrProtocol

// abort closes c at once, without a goodbye: a TLS connection is closed
// beneath TLS, whose Close first writes a close_notify alert and, to a
// peer that does not read, waits up to 5s for room to write it.
func abort(c net.Conn) error {
	for {
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		c = u.NetConn()
	}
	return c.Close()
}
