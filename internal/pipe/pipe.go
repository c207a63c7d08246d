// Package pipe joins two connections: it copies bytes both ways, carries a
// half-close from one side to the other, and counts the bytes.
//
// Every byte sallyport relays goes through Join:
//
//	res := pipe.Join(client, stream) // returns when both directions are done
//	log.Info("closed", "up", res.AToB, "down", res.BToA)
package pipe

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
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
	var res Result
	var wg sync.WaitGroup
	var errOnce sync.Once
	// closed is set when a direction closed its destination for want of
	// CloseWrite: the other direction then fails on a closed connection,
	// which is the end of the exchange, not an error.
	var closed atomic.Bool
	fail := func(err error) {
		if closed.Load() && (errors.Is(err, net.ErrClosed) || errors.Is(err, io.ErrClosedPipe)) {
			err = nil
		}
		errOnce.Do(func() {
			res.Err = err
			if err != nil && !isRefusal(err) {
				// An aborted exchange is reset, as TCP does, so that
				// neither side takes a cut-off stream for a complete one.
				reset(a)
				reset(b)
			}
			a.Close()
			b.Close()
		})
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		res.BToA = oneWay(a, b, fail, &closed)
	}()
	res.AToB = oneWay(b, a, fail, &closed)
	wg.Wait()
	a.Close()
	b.Close()
	return res
}

// A Refusal is an error that ends an exchange before it began (a
// connector refused the stream): the other side then gets a plain close,
// not a reset. wire.Refusal is one.
type Refusal interface{ Refused() bool }

func isRefusal(err error) bool {
	var r Refusal
	return errors.As(err, &r) && r.Refused()
}

// reset makes c's Close send a TCP reset instead of a FIN, where c is TCP.
func reset(c net.Conn) {
	if l, ok := c.(interface{ SetLinger(int) error }); ok {
		l.SetLinger(0)
	}
}

// oneWay copies src to dst and then half-closes; on error it calls fail.
// It sets closed before closing dst for want of a half-close.
func oneWay(dst, src net.Conn, fail func(error), closed *atomic.Bool) int64 {
	n, err := copyBuffered(dst, src)
	if err != nil {
		fail(err)
		return n
	}
	if cw, ok := dst.(closeWriter); ok {
		if err := cw.CloseWrite(); err != nil && !errors.Is(err, net.ErrClosed) {
			fail(err)
			return n
		}
	} else {
		// Without a half-close the only way to say "no more bytes" is to
		// close; the other direction ends with it.
		closed.Store(true)
		dst.Close()
	}
	if cr, ok := src.(closeReader); ok {
		cr.CloseRead()
	}
	return n
}

// readWaiter is a connection that can wait for bytes to read without a
// buffer (tunnel.Stream).
type readWaiter interface{ WaitRead() error }

// copyBuffered copies with a pooled buffer. It lets a TCP destination use
// the kernel's splice when the source is TCP too.
//
// An idle connection holds no buffer. A TCP source is read through its
// raw descriptor with a buffer borrowed only once bytes are there (see
// tcpSource); a source that can wait without a buffer (readWaiter) is
// waited for first. Once a read no longer fills the buffer, the source is
// drained and the buffer goes back to the pool.
func copyBuffered(dst, src net.Conn) (int64, error) {
	if rf, ok := dst.(io.ReaderFrom); ok {
		if _, srcTCP := src.(*net.TCPConn); srcTCP {
			return rf.ReadFrom(src)
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
	var total int64
	for {
		var nr int
		var rerr error
		bp, nr, rerr = read(bp)
		if nr > 0 {
			nw, werr := dst.Write((*bp)[:nr])
			total += int64(nw)
			if werr != nil {
				return total, werr
			}
			if nw != nr {
				return total, io.ErrShortWrite
			}
		}
		if rerr == io.EOF {
			return total, nil
		}
		if rerr != nil {
			return total, rerr
		}
		if release && bp != nil && nr < len(*bp) {
			buffers.Put(bp)
			bp = nil
		}
	}
}
