package mux

import (
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// Stream is one ordered byte stream of a session, both ways. It is a
// net.Conn-like stream with CloseWrite: Read and Write may be called
// concurrently with each other, and deadlines may move while they wait.
//
// The session's reading goroutine fills the stream's receive buffer and
// its send credit; the caller's Read empties the buffer and gives credit
// back; the caller's Write takes send credit and queues frames on the
// session's writer.
type Stream struct {
	id   uint32
	sess *Session

	rwake chan struct{} // cap 1: wakes a Read that waits
	wwake chan struct{} // cap 1: wakes a Write that waits for credit
	// unacked is set on a stream opened here until the peer answers.
	unacked atomic.Bool

	// wmu serializes Write and CloseWrite: a stream's data and its FIN
	// leave in order.
	wmu sync.Mutex

	// mu guards the fields below.
	mu sync.Mutex
	// buf holds the bytes received and not read; filling is set while
	// the session's reader fills its tail outside the lock.
	buf     recvBuf
	filling bool
	// Receive flow control (flow.go): the window, the credit the peer
	// holds, the reservation from the budget, and when the stream last
	// received bytes and last gave credit back (session times).
	win, credit, res     int64
	lastRecv, lastUpdate int64
	// sendCredit is what this side may still send.
	sendCredit int64
	// finRecv: the peer finished sending; finSent: this side did;
	// rstRecv: the peer reset the stream; closed: Close was called;
	// ended: the session ended.
	finRecv, finSent, rstRecv, closed, ended bool
	rdl, wdl                                 time.Time
	onReadable                               func()
}

func newStream(s *Session, id uint32) *Stream {
	st := &Stream{
		id:         id,
		sess:       s,
		rwake:      make(chan struct{}, 1),
		wwake:      make(chan struct{}, 1),
		win:        InitialWindow,
		credit:     InitialWindow,
		sendCredit: InitialWindow,
		lastUpdate: s.now(),
	}
	st.unacked.Store(s.cfg.Opens)
	return st
}

// ID returns the stream's id.
func (st *Stream) ID() uint32 { return st.id }

// frame handles a data frame or window update for the stream; it is
// called by the session's reader.
func (st *Stream) frame(h header) error {
	s := st.sess
	st.mu.Lock()
	if h.typ == typeWindowUpdate && h.length > 0 {
		st.sendCredit = min(st.sendCredit+int64(h.length), 1<<40)
		wake(st.wwake)
	}
	readable := false
	if h.typ == typeData && h.length > 0 && (st.closed || st.rstRecv || st.ended) {
		// Closed or reset here and not forgotten yet: skipped, as if it
		// had been.
		st.mu.Unlock()
		return s.skip(h)
	}
	if h.typ == typeData && h.length > 0 {
		if st.finRecv {
			st.mu.Unlock()
			return fmt.Errorf("%w: the peer sent %d bytes on stream %d after finishing it", ErrProtocol, h.length, st.id)
		}
		if int64(h.length) > st.credit {
			credit := st.credit
			st.mu.Unlock()
			return fmt.Errorf("%w: the peer sent %d bytes on stream %d, beyond its window (%d)", ErrProtocol, h.length, st.id, credit)
		}
		st.credit -= int64(h.length)
		if err := st.receive(int(h.length)); err != nil {
			st.mu.Unlock()
			return err
		}
		readable = true
	}
	if h.flags&flagFIN != 0 && !st.finRecv {
		st.finRecv = true
		st.credit = 0
		st.trim()
		readable = true
	}
	reset := h.flags&flagRST != 0 && !st.rstRecv
	if reset {
		st.rstRecv = true
		if !st.finRecv {
			st.buf.reset(false)
		}
		st.credit = 0
		st.trim()
		wake(st.wwake)
		readable = true
	}
	var f func()
	if readable {
		wake(st.rwake)
		f, st.onReadable = st.onReadable, nil
	}
	st.mu.Unlock()
	if reset {
		s.forget(st.id)
	}
	if f != nil {
		f()
	}
	return nil
}

// receive reads n bytes of a data frame's body from the connection into
// the receive buffer; it is called with st.mu held, and returns with it
// held, but lets it go while it reads (filling). Bytes for a stream that
// has ended meanwhile are dropped.
func (st *Stream) receive(n int) error {
	s := st.sess
	st.lastRecv = s.now()
	for n > 0 {
		if st.closed || st.ended || st.rstRecv {
			st.mu.Unlock()
			err := s.discard(n)
			st.mu.Lock()
			if err != nil {
				return fmt.Errorf("read from the connection: %w", err)
			}
			return nil
		}
		dst := st.buf.space(n)
		st.filling = true
		st.mu.Unlock()
		k, err := io.ReadFull(s.rd, dst)
		st.mu.Lock()
		st.filling = false
		if err != nil {
			return fmt.Errorf("read from the connection: %w", err)
		}
		if st.closed || st.ended || st.rstRecv {
			st.buf.reset(false)
		} else {
			st.buf.commit(k)
		}
		n -= k
	}
	return nil
}

// sessionEnded ends the stream with its session: reads fail unless the
// peer had finished it, writes fail.
func (st *Stream) sessionEnded() {
	st.mu.Lock()
	st.ended = true
	if !st.finRecv {
		st.buf.reset(st.filling)
	}
	st.credit = 0
	st.trim()
	f := st.onReadable
	st.onReadable = nil
	st.mu.Unlock()
	wake(st.rwake)
	wake(st.wwake)
	if f != nil {
		f()
	}
}

// readErr is what a Read returns with nothing buffered, or nil if it
// waits. The caller holds st.mu.
func (st *Stream) readErr() error {
	switch {
	case st.closed:
		return ErrStreamClosed
	case st.finRecv:
		return io.EOF
	case st.rstRecv:
		return ErrReset
	case st.ended:
		return st.sess.streamErr
	}
	return nil
}

// Read reads the peer's bytes. After the peer's FIN it returns io.EOF
// once the buffered bytes are read; after the peer's reset ErrReset; once
// the session has ended, an error wrapping ErrClosed. Read(nil) waits
// until a Read would not block, and returns that Read's error, if any,
// without taking a byte.
func (st *Stream) Read(p []byte) (int, error) {
	var timer *time.Timer
	defer stopTimer(&timer)
	for {
		st.mu.Lock()
		if st.buf.n > 0 && !st.closed {
			if len(p) == 0 {
				st.mu.Unlock()
				return 0, nil
			}
			n := st.buf.read(p, st.filling)
			st.creditBack()
			st.mu.Unlock()
			return n, nil
		}
		if err := st.readErr(); err != nil {
			st.mu.Unlock()
			return 0, err
		}
		deadline := st.rdl
		st.mu.Unlock()
		if err := st.sleep(st.rwake, deadline, &timer); err != nil {
			return 0, err
		}
	}
}

// sleep waits for a wake on c, the end of the session or the deadline
// (zero: none), whichever comes first; it returns errTimeout at the
// deadline. timer is the caller's, made on demand.
func (st *Stream) sleep(c chan struct{}, deadline time.Time, timer **time.Timer) error {
	expired, err := armTimer(timer, deadline)
	if err != nil {
		return err
	}
	select {
	case <-c:
	case <-st.sess.done:
		// The stream learns of it in sessionEnded; wait for that.
		st.mu.Lock()
		ended := st.ended
		st.mu.Unlock()
		if !ended {
			<-c
		}
	case <-expired:
		return errTimeout
	}
	return nil
}

// readable reports whether a Read would not block. The caller holds
// st.mu.
func (st *Stream) readable() bool {
	return st.buf.n > 0 || st.readErr() != nil
}

// Readable reports whether a Read would not block: bytes are buffered,
// or the stream has ended one way or another.
func (st *Stream) Readable() bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.readable()
}

// WaitReadable waits at most d until a Read would not block, and reports
// whether it would not. It takes no byte.
func (st *Stream) WaitReadable(d time.Duration) bool {
	deadline := time.Now().Add(d)
	var timer *time.Timer
	defer stopTimer(&timer)
	for {
		st.mu.Lock()
		ok := st.readable()
		st.mu.Unlock()
		if ok {
			wake(st.rwake) // for another waiter
			return true
		}
		if st.sleep(st.rwake, deadline, &timer) != nil {
			return false
		}
	}
}

// NotifyRead arranges for f to be called once, as soon as a Read would
// not block: bytes are buffered, the peer has finished or reset the
// stream, or the session has ended. If that is so already, f is called
// before NotifyRead returns; else it is called from the session's
// reading goroutine, which f must not block. A later call replaces an f
// not yet called; NotifyRead(nil) cancels it. Close cancels it too.
func (st *Stream) NotifyRead(f func()) {
	st.mu.Lock()
	if f != nil && st.readable() {
		st.onReadable = nil
		st.mu.Unlock()
		f()
		return
	}
	st.onReadable = f
	st.mu.Unlock()
}

// writeErr is what a Write returns before sending, or nil. The caller
// holds st.mu.
func (st *Stream) writeErr() error {
	switch {
	case st.closed:
		return ErrStreamClosed
	case st.finSent:
		return ErrWriteClosed
	case st.rstRecv:
		return ErrReset
	case st.ended:
		return st.sess.streamErr
	}
	return nil
}

// Write sends p to the peer, in frames of at most maxFrame bytes and the
// credit the peer has given; it waits for credit, and for room in the
// session's outgoing buffer.
func (st *Stream) Write(p []byte) (int, error) {
	st.wmu.Lock()
	defer st.wmu.Unlock()
	var timer *time.Timer
	defer stopTimer(&timer)
	n := 0
	for len(p) > 0 {
		st.mu.Lock()
		if err := st.writeErr(); err != nil {
			st.mu.Unlock()
			return n, err
		}
		deadline := st.wdl
		if !deadline.IsZero() && !time.Now().Before(deadline) {
			st.mu.Unlock()
			return n, errTimeout
		}
		if st.sendCredit == 0 {
			st.mu.Unlock()
			if err := st.sleep(st.wwake, deadline, &timer); err != nil {
				return n, err
			}
			continue
		}
		k := int(min(int64(len(p)), st.sendCredit, maxFrame))
		if st.sess.w.tryAppendData(0, st.id, p[:k]) {
			st.sendCredit -= int64(k)
			st.mu.Unlock()
			n += k
			p = p[k:]
			continue
		}
		st.mu.Unlock()
		if err := st.sess.waitRoom(deadline, &timer, st.wwake); err != nil {
			if err == errTimeout {
				return n, err
			}
			return n, st.sess.streamErr
		}
	}
	return n, nil
}

// CloseWrite finishes this side's sending (FIN): the peer reads what was
// sent, then EOF, and may go on sending. A Write after it fails.
func (st *Stream) CloseWrite() error {
	st.wmu.Lock()
	defer st.wmu.Unlock()
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.finSent && !st.closed {
		return nil
	}
	if err := st.writeErr(); err != nil {
		return err
	}
	st.finSent = true
	st.sess.appendControl(typeWindowUpdate, flagFIN, st.id, 0)
	return nil
}

// Close ends the stream both ways and forgets it: what the peer still
// sends on it is skipped. If the peer has finished sending, Close
// finishes this side's sending too (FIN) if it has not yet; otherwise it
// resets the stream (RST, as TCP's): the peer's reads and writes fail
// with ErrReset, and what it had not read is discarded, unless this side
// had finished first (then it reads to the end). It is idempotent.
func (st *Stream) Close() error {
	st.mu.Lock()
	if st.closed {
		st.mu.Unlock()
		return nil
	}
	st.closed = true
	if !st.rstRecv && !st.ended {
		if !st.finRecv {
			st.sess.appendControl(typeWindowUpdate, flagRST, st.id, 0)
		} else if !st.finSent {
			st.sess.appendControl(typeWindowUpdate, flagFIN, st.id, 0)
		}
	}
	st.buf.reset(st.filling)
	st.credit = 0
	st.onReadable = nil
	st.trim()
	st.mu.Unlock()
	wake(st.rwake)
	wake(st.wwake)
	if st.unacked.CompareAndSwap(true, false) {
		st.sess.acked()
	}
	st.sess.forget(st.id)
	return nil
}

// SetDeadline sets both deadlines.
func (st *Stream) SetDeadline(t time.Time) error {
	st.SetReadDeadline(t)
	return st.SetWriteDeadline(t)
}

// SetReadDeadline sets the time after which a Read that waits fails with
// a timeout (os.ErrDeadlineExceeded); zero means none. It moves the
// deadline of a Read that waits already.
func (st *Stream) SetReadDeadline(t time.Time) error {
	st.mu.Lock()
	st.rdl = t
	st.mu.Unlock()
	wake(st.rwake)
	return nil
}

// SetWriteDeadline sets the time after which a Write fails with a
// timeout; zero means none. It moves the deadline of a Write that waits
// already, for credit or for room in the session's outgoing buffer.
func (st *Stream) SetWriteDeadline(t time.Time) error {
	st.mu.Lock()
	st.wdl = t
	st.mu.Unlock()
	wake(st.wwake)
	return nil
}
