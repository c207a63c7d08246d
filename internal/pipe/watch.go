package pipe

import (
	"io"
	"net"
	"sync"
	"time"
)

// A watch is a direction dst←src whose source is read on readiness.
// While src has nothing to read, no goroutine serves the direction: the
// source is armed to call fire once it becomes readable (or ends); fire
// starts a goroutine that copies until the source is empty and arms it
// again, or until the direction ends. At most one such goroutine runs per
// watch.
//
// Two kinds of source can be watched: a TCP connection, armed one-shot in
// the package's epoll instance (Linux), and a connection that tells
// readiness itself (a Notifier, such as a tunnel stream).
type watch struct {
	j     *joint
	dst   net.Conn
	src   readySource
	count *int64
	fire  func() // w.wake, allocated once

	mu    sync.Mutex
	state watchState
}

type watchState uint8

const (
	watchIdle   watchState = iota // armed, no copier running
	watchActive                   // a copier is running
	watchDone                     // the direction has ended
)

// readySource is a source a watch can wait on.
type readySource interface {
	// conn is the source connection.
	conn() net.Conn
	// read reads what the source holds into bp, or into a newly
	// borrowed buffer, waiting at most wait for it (with no buffer held
	// meanwhile). again reports that nothing came; the buffer has then
	// gone back to the pool. At end of stream it returns io.EOF.
	read(bp *[]byte, wait time.Duration) (_ *[]byte, n int, err error, again bool)
	// arm asks for w.fire to be called once the source is readable,
	// perhaps before arm returns.
	arm(w *watch) error
	// disarm takes back what arm asked for.
	disarm(w *watch)
}

// A Notifier is a connection that tells when a Read would not block, so
// that nothing has to wait in Read for it. tunnel.Stream is one.
type Notifier interface {
	// NotifyRead arranges for f to be called once, as soon as a Read
	// would not block: perhaps before NotifyRead returns, else from a
	// goroutine that f must not block. A later call replaces an f not yet
	// called; NotifyRead(nil) cancels it.
	NotifyRead(f func())
	// TryRead reads what is there without waiting; wait reports that
	// nothing is (no bytes, no end, no error).
	TryRead(b []byte) (n int, wait bool, err error)
}

// watch returns a watch for the direction dst←src if src can be read on
// readiness, else nil: a Notifier, or a TCP connection on Linux (except
// towards another TCP connection, which the kernel's splice serves).
func (j *joint) watch(dst, src net.Conn, count *int64) *watch {
	var rs readySource
	if n, ok := src.(Notifier); ok {
		rs = &notifySource{c: src, n: n}
	} else if tc, ok := src.(*net.TCPConn); ok {
		if _, dstTCP := dst.(*net.TCPConn); !dstTCP {
			rs = tcpReadySource(tc)
		}
	}
	if rs == nil {
		return nil
	}
	w := &watch{j: j, dst: dst, src: rs, count: count}
	w.fire = w.wake
	return w
}

// arm starts the direction: a copier runs at first, as for a source
// just found readable, and arms the source only once it has been empty
// for linger. A short exchange (a request and its response on a new
// connection) is over before it ever waits on readiness.
func (w *watch) arm() {
	w.mu.Lock()
	if w.state == watchDone { // the exchange ended before this direction began
		w.mu.Unlock()
		return
	}
	w.state = watchActive
	w.mu.Unlock()
	go w.copyFrom(linger)
}

// wake is called when the source is readable: it starts a copier unless
// one runs or the direction has ended.
func (w *watch) wake() {
	if w.leaveIdle(watchActive) {
		go w.copyFrom(0)
	}
}

// leaveIdle moves an idle watch to state and reports whether it was idle.
func (w *watch) leaveIdle(state watchState) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.state != watchIdle {
		return false
	}
	w.state = state
	return true
}

// linger is how long a copier that has emptied its source waits for more
// before it ends and leaves the source armed: a connection that is busy
// keeps its goroutine, parked in the runtime's poller, and pays nothing
// per burst; one at rest for longer costs none.
const linger = 100 * time.Millisecond

// copyFrom moves what the source has to the destination, then arms the
// source again (rest), or ends the direction. wait is how long its first
// read may wait: none when the source was found readable.
func (w *watch) copyFrom(wait time.Duration) {
	var bp *[]byte
	for {
		var n int
		var err error
		var again bool
		bp, n, err, again = w.src.read(bp, wait)
		if n > 0 {
			nw, werr := w.dst.Write((*bp)[:n])
			*w.count += int64(nw)
			if werr == nil && nw != n {
				werr = io.ErrShortWrite
			}
			if werr != nil {
				buffers.Put(bp)
				w.end(werr)
				return
			}
		}
		switch {
		case again: // the buffer is back in the pool
			w.rest()
			return
		case err != nil:
			if bp != nil {
				buffers.Put(bp)
			}
			if err == io.EOF {
				err = nil
			}
			w.end(err)
			return
		}
		wait = 0
		if n < len(*bp) {
			// Drained for now: no buffer held across the next wait.
			buffers.Put(bp)
			bp = nil
			wait = linger
		}
	}
}

// rest arms the source again once it is empty. If the exchange is ending,
// or the source was closed under it, the direction ends instead.
func (w *watch) rest() {
	w.mu.Lock()
	failed := w.j.failed.Load()
	if failed {
		w.state = watchDone
	} else {
		w.state = watchIdle
	}
	w.mu.Unlock()
	if failed {
		w.finish()
		return
	}
	err := w.src.arm(w)
	w.mu.Lock()
	done := w.state == watchDone
	w.mu.Unlock()
	switch {
	case err != nil:
		if w.leaveIdle(watchDone) {
			w.j.fail(err) // closed from outside: cut off (a no-op if ending)
			w.finish()
		}
	case done:
		w.src.disarm(w) // aborted while arming: take back what was armed
	}
}

// abort ends an idle direction because the exchange is ending; a running
// copier ends by itself on the closed connections.
func (w *watch) abort() {
	if w.leaveIdle(watchDone) {
		w.finish()
	}
}

// end ends the direction after a copier saw end of stream (err nil) or an
// error.
func (w *watch) end(err error) {
	w.mu.Lock()
	w.state = watchDone
	w.mu.Unlock()
	w.unregister()
	w.j.ended(w.dst, w.src.conn(), err)
}

// finish ends the direction without a half-close: the exchange is over.
func (w *watch) finish() {
	w.unregister()
	w.j.finish()
}

// unregister takes back what the source was armed with. Every way a
// direction ends passes here once (a direction leaves watchIdle or
// watchActive for watchDone once).
func (w *watch) unregister() { w.src.disarm(w) }

// notifySource is a Notifier as a readySource.
type notifySource struct {
	c net.Conn
	n Notifier
}

func (s *notifySource) conn() net.Conn { return s.c }

// A Lingerer is a Notifier that can also wait for readiness, for at most
// a while. tunnel.Stream is one.
type Lingerer interface {
	// WaitReadFor waits at most d until a Read would not block, and
	// reports whether it would not.
	WaitReadFor(d time.Duration) bool
}

func (s *notifySource) read(bp *[]byte, wait time.Duration) (*[]byte, int, error, bool) {
	if l, ok := s.n.(Lingerer); ok && wait > 0 && bp == nil && !l.WaitReadFor(wait) {
		return nil, 0, nil, true
	}
	if bp == nil {
		bp = buffers.Get().(*[]byte)
	}
	n, nothing, err := s.n.TryRead(*bp)
	if nothing && n == 0 {
		buffers.Put(bp)
		return nil, 0, nil, true
	}
	return bp, n, err, false
}

func (s *notifySource) arm(w *watch) error {
	s.n.NotifyRead(w.fire)
	return nil
}

func (s *notifySource) disarm(w *watch) { s.n.NotifyRead(nil) }
