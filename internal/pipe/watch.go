package pipe

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
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
// the process's poller (package netpoll), and a connection that tells
// readiness itself (a Notifier, such as a tunnel stream).
//
//	     begin (Start), or wake (readable)
//	idle ─────────────────────────────────► active
//	 │  ◄───────────────────────────────────  │
//	 │    rest (empty for linger: armed)      │ end (EOF or error)
//	 │                                        ▼
//	 └──── abort (the exchange ends) ──────► done
type watch struct {
	j      *joint
	dst    net.Conn
	src    readySource
	count  *atomic.Int64
	fire   func()        // w.wake, allocated once
	linger time.Duration // how long a copier waits for more before it rests

	// state guards where the direction stands.
	state struct {
		sync.Mutex
		phase watchPhase
		// armed is set once the source is armed for the latest of rests
		// (the entries into watchIdle, counted), until it leaves.
		armed bool
		rests uint32
	}
}

type watchPhase uint8

const (
	watchIdle   watchPhase = iota // no copier: not begun, or the source is armed (or being armed)
	watchActive                   // a copier is running (or about to)
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
	// arm asks for the watch's fire to be called once the source is
	// readable, perhaps before arm returns.
	arm() error
	// disarm takes back what arm asked for.
	disarm()
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
func (j *joint) watch(dst, src net.Conn, count *atomic.Int64, linger time.Duration) *watch {
	w := &watch{j: j, dst: dst, count: count, linger: linger}
	w.fire = w.wake
	if n, ok := src.(Notifier); ok {
		w.src = &notifySource{n: n, fire: w.fire}
	} else if tc, ok := src.(*net.TCPConn); ok {
		if _, dstTCP := dst.(*net.TCPConn); !dstTCP {
			w.src = tcpReadySource(tc, w.fire)
		}
	}
	if w.src == nil {
		return nil
	}
	return w
}

// begin starts the direction: a copier runs at first, as for a source
// just found readable, and arms the source only once it has been empty
// for linger. A short exchange (a request and its response on a new
// connection) is over before it ever waits on readiness.
func (w *watch) begin() {
	if w.leaveIdle(watchActive) { // else the exchange ended before this direction began
		go w.copyFrom(w.linger)
	}
}

// wake is called when the source is readable: it starts a copier unless
// one runs or the direction has ended.
func (w *watch) wake() {
	if w.leaveIdle(watchActive) {
		go w.copyFrom(0)
	}
}

// leaveIdle moves an idle watch to phase and reports whether it was idle.
func (w *watch) leaveIdle(phase watchPhase) bool {
	w.state.Lock()
	defer w.state.Unlock()
	if w.state.phase != watchIdle {
		return false
	}
	w.state.phase = phase
	w.state.armed = false
	return true
}

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
			w.count.Add(int64(nw))
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
			// Empty for now: no buffer held across the next wait.
			buffers.Put(bp)
			bp = nil
			wait = w.linger
		}
	}
}

// rest arms the source again once it is empty. If the exchange is ending,
// or the source was closed under it, the direction ends instead.
func (w *watch) rest() {
	w.state.Lock()
	failed := w.j.failed.Load()
	if failed {
		w.state.phase = watchDone
	} else {
		w.state.phase = watchIdle
		w.state.rests++
	}
	entry := w.state.rests
	w.state.Unlock()
	if failed {
		w.finish()
		return
	}
	err := w.src.arm()
	w.state.Lock()
	done := w.state.phase == watchDone
	if err == nil && w.state.phase == watchIdle && w.state.rests == entry {
		w.state.armed = true
	}
	w.state.Unlock()
	switch {
	case err != nil:
		if w.leaveIdle(watchDone) {
			w.j.fail(err) // closed from outside: cut off (a no-op if ending)
			w.finish()
		}
	case done:
		w.src.disarm() // aborted while arming: take back what was armed
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
	w.state.Lock()
	w.state.phase = watchDone
	w.state.Unlock()
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
func (w *watch) unregister() { w.src.disarm() }

// notifySource is a Notifier as a readySource.
type notifySource struct {
	n    Notifier // a net.Conn
	fire func()
}

func (s *notifySource) conn() net.Conn { return s.n.(net.Conn) }

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

func (s *notifySource) arm() error {
	s.n.NotifyRead(s.fire)
	return nil
}

func (s *notifySource) disarm() { s.n.NotifyRead(nil) }
