// Package pipe joins two connections: it copies bytes both ways, carries a
// half-close from one side to the other, and counts the bytes.
//
// Every byte sallyport relays goes through Start (or Join, which waits):
//
//	pipe.Start(client, stream, func(res pipe.Result) { // when both directions are done
//		log.Info("closed", "up", res.AToB, "down", res.BToA)
//	})
//
// A direction whose source can say when it is readable (a TCP connection
// on Linux, armed in the process's poller from package netpoll; a tunnel
// stream, a Notifier) holds no goroutine while it rests; see watch.
package pipe

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// BufferSize is the size of the pooled copy buffers.
const BufferSize = 32 << 10

var buffers = sync.Pool{New: func() any { b := make([]byte, BufferSize); return &b }}

// Result reports what Join carried.
type Result struct {
	AToB, BToA int64 // bytes copied in each direction
	// Err is the first error other than a clean end of stream, if any. A
	// direction that ends with an error aborts the other one.
	Err error
}

type closeWriter interface{ CloseWrite() error }
type closeReader interface{ CloseRead() error }

// Join copies a→b and b→a until both directions have ended, then closes
// both connections. Join owns a and b: they are closed when it returns.
//
// When one direction reaches end of stream, Join closes the write side of
// its destination (CloseWrite) and the read side of its source (CloseRead),
// where the connection supports them, and keeps the other direction going,
// so a client that shuts down its sending side still receives the whole
// response. When a direction fails with an error, both connections are
// closed at once, which ends the other direction too; TCP connections are
// then reset (RST), unless the error is a Refusal.
func Join(a, b net.Conn) Result {
	done := make(chan Result, 1)
	Start(a, b, func(r Result) { done <- r })
	return <-done
}

// Start is Join without the wait: it returns at once, and done is called
// with the result, once, when both directions have ended and a and b are
// closed. A gateway that starts its joins holds no goroutine of its own
// per connection.
//
// Where the platform allows, a TCP source is read on readiness: while it
// is idle no goroutine waits on it, and one is started to copy a burst
// when bytes arrive. A connection at rest then costs no goroutine. To cut
// a started exchange off from outside, use the returned Exchange's Abort,
// not a Close of one connection: the direction towards that connection
// may be waiting on the other one, and nothing would wake it.
func Start(a, b net.Conn, done func(Result)) *Exchange {
	return start(a, b, done, linger)
}

// linger is how long a copier that has emptied its source waits for more
// before it ends and leaves the source armed: a connection that is busy
// keeps its goroutine, parked in the runtime's poller, and pays nothing
// per burst; one at rest for longer costs none.
const linger = 100 * time.Millisecond

// start is Start with copiers that linger for d.
func start(a, b net.Conn, done func(Result), d time.Duration) *Exchange {
	j := &joint{a: a, b: b, done: done}
	j.left.Store(2)
	// Every watched direction is known before any direction can fail.
	wa, wb := j.watch(a, b, &j.counts.BToA, d), j.watch(b, a, &j.counts.AToB, d)
	j.watches = [2]*watch{wa, wb}
	j.run(wa, a, b, &j.counts.BToA)
	j.run(wb, b, a, &j.counts.AToB)
	return &Exchange{j: j}
}

// An Exchange is a started join.
type Exchange struct{ j *joint }

// Bytes returns the bytes carried so far in each direction, for a view
// of live connections. A direction between two TCP connections (the
// kernel's splice) is counted only when it ends.
func (x *Exchange) Bytes() (aToB, bToA int64) {
	return x.j.counts.AToB.Load(), x.j.counts.BToA.Load()
}

// Abort ends the exchange as cut off: both connections are reset (where
// TCP) and closed, and done is called as for an error. It does nothing to
// an exchange that has ended.
func (x *Exchange) Abort() { x.j.fail(net.ErrClosed) }

// joint is one Start: two directions and what they carried.
type joint struct {
	a, b    net.Conn
	done    func(Result)
	watches [2]*watch    // directions read on readiness, or nil
	left    atomic.Int32 // directions not yet ended
	// counts are the bytes each direction carried, each added to by its
	// own direction only as it writes, and read at any time (Bytes).
	counts struct{ AToB, BToA atomic.Int64 }

	// closed is set when a direction closed its destination for want of
	// CloseWrite: the other direction then fails on a closed connection,
	// which is the end of the exchange, not an error.
	closed atomic.Bool
	// failed is set once fail has begun: the connections are closing.
	failed atomic.Bool
	// gentle is set when a refusal ended the exchange: TCP sides are
	// closed with CloseGently once no direction reads them.
	gentle  atomic.Bool
	errOnce sync.Once
	// result guards the error that ended the exchange: fail sets it,
	// perhaps from outside (Abort) while finish reads it.
	result struct {
		sync.Mutex
		err error
	}
}

// run starts the direction dst←src: on readiness if w watches it,
// else in a goroutine of its own.
func (j *joint) run(w *watch, dst, src net.Conn, count *atomic.Int64) {
	if w != nil {
		w.begin()
		return
	}
	go func() {
		err := copyBuffered(dst, src, count)
		j.ended(dst, src, err)
	}()
}

// ended finishes the direction dst←src: a half-close after a clean end,
// the end of the whole exchange after an error.
func (j *joint) ended(dst, src net.Conn, err error) {
	if err == nil {
		if cw, ok := dst.(closeWriter); ok {
			if cerr := cw.CloseWrite(); cerr != nil && !errors.Is(cerr, net.ErrClosed) {
				err = cerr
			}
		} else {
			// Without a half-close the only way to say "no more bytes"
			// is to close; the other direction ends with it.
			j.closed.Store(true)
			dst.Close()
		}
	}
	if err != nil {
		j.fail(err)
	} else if cr, ok := src.(closeReader); ok {
		cr.CloseRead()
	}
	j.finish()
}

// fail ends the exchange: it records err, resets TCP connections unless
// the exchange ended cleanly or was refused, closes both, and ends the
// directions that wait on readiness.
func (j *joint) fail(err error) {
	if j.closed.Load() && (errors.Is(err, net.ErrClosed) || errors.Is(err, io.ErrClosedPipe)) {
		err = nil
	}
	j.errOnce.Do(func() {
		j.failed.Store(true)
		j.result.Lock()
		j.result.err = err
		j.result.Unlock()
		switch {
		case err != nil && isRefusal(err):
			// Refused before it began: a plain close, even if the
			// client's first bytes are still unread. A TCP side is told
			// now (FIN) and closed once no direction reads it (finish).
			j.gentle.Store(true)
			stopGently(j.a)
			stopGently(j.b)
		case err != nil:
			// An aborted exchange is reset, as TCP does, so that neither
			// side takes a cut-off stream for a complete one.
			reset(j.a)
			reset(j.b)
			fallthrough
		default:
			j.a.Close()
			j.b.Close()
		}
		for _, w := range j.watches {
			if w != nil {
				w.abort()
			}
		}
	})
}

// finish counts a direction out; the last one closes both connections
// and reports.
func (j *joint) finish() {
	if j.left.Add(-1) > 0 {
		return
	}
	if j.gentle.Load() {
		CloseGently(j.a)
		CloseGently(j.b)
	}
	j.a.Close()
	j.b.Close()
	j.result.Lock()
	err := j.result.err
	j.result.Unlock()
	j.done(Result{AToB: j.counts.AToB.Load(), BToA: j.counts.BToA.Load(), Err: err})
}

// A Refusal is an error that ends an exchange before it began (a
// connector refused the stream): the other side then gets a plain close,
// not a reset. wire.Refusal is one.
type Refusal interface{ Refused() bool }

func isRefusal(err error) bool {
	var r Refusal
	return errors.As(err, &r) && r.Refused()
}

// CloseGently closes c with a FIN rather than a reset where c is TCP:
// the kernel answers a close with unread bytes by a reset, so c is
// half-closed first and what the peer sent is discarded until the peer
// closes too (discardUntilClosed). Other connections are just closed.
func CloseGently(c net.Conn) error {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c.Close()
	}
	tc.CloseWrite()
	discardUntilClosed(tc)
	return tc.Close()
}

// discardUntilClosed reads and drops what the peer of c sends until it
// closes its side, for at most peerCloseWait and 1 MiB.
func discardUntilClosed(c *net.TCPConn) {
	c.SetReadDeadline(time.Now().Add(peerCloseWait))
	io.CopyN(io.Discard, c, 1<<20)
}

// stopGently ends c's part in an exchange that was refused: a TCP
// connection is half-closed, so its peer learns at once, and its readers
// are woken (they fail, and CloseGently can then discard what it sent);
// any other connection is closed.
func stopGently(c net.Conn) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		c.Close()
		return
	}
	tc.CloseWrite()
	tc.SetReadDeadline(time.Unix(1, 0))
}

// peerCloseWait bounds how long CloseGently waits for the peer's close.
const peerCloseWait = 200 * time.Millisecond

// reset makes c's Close send a TCP reset instead of a FIN, where c is TCP.
func reset(c net.Conn) {
	if l, ok := c.(interface{ SetLinger(int) error }); ok {
		l.SetLinger(0)
	}
}

// readWaiter is a connection that can wait for bytes to read without a
// buffer (tunnel.Stream).
type readWaiter interface{ WaitRead() error }

// copyBuffered copies with a pooled buffer, adding what it writes to
// count as it goes. It lets a TCP destination use the kernel's splice
// when the source is TCP too (counted once it ends).
//
// An idle connection holds no buffer. A TCP source is read through its
// raw descriptor with a buffer borrowed only once bytes are there (see
// tcpSource); a source that can wait without a buffer (readWaiter) is
// waited for first. Once a read no longer fills the buffer, the source is
// empty and the buffer goes back to the pool.
func copyBuffered(dst, src net.Conn, count *atomic.Int64) error {
	if rf, ok := dst.(io.ReaderFrom); ok {
		if _, srcTCP := src.(*net.TCPConn); srcTCP {
			n, err := rf.ReadFrom(src)
			count.Add(n)
			return err
		}
	}
	var ts *tcpSource
	if tc, ok := src.(*net.TCPConn); ok {
		ts = newTCPSource(tc)
	}
	w, canWait := src.(readWaiter)
	read := func(bp *[]byte) (*[]byte, int, error) {
		if bp == nil {
			if canWait {
				w.WaitRead() // the Read below returns its error
			}
			bp = buffers.Get().(*[]byte)
		}
		n, err := src.Read(*bp)
		return bp, n, err
	}
	if ts != nil {
		read = ts.Read
	}
	release := ts != nil || canWait
	var bp *[]byte
	defer func() {
		if bp != nil {
			buffers.Put(bp)
		}
	}()
	for {
		var nr int
		var rerr error
		bp, nr, rerr = read(bp)
		if nr > 0 {
			nw, werr := dst.Write((*bp)[:nr])
			count.Add(int64(nw))
			if werr != nil {
				return werr
			}
			if nw != nr {
				return io.ErrShortWrite
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
		if release && bp != nil && nr < len(*bp) {
			buffers.Put(bp)
			bp = nil
		}
	}
}
