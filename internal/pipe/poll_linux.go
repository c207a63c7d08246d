package pipe

import (
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
)

// A watch is a direction dst←src whose TCP source is read on readiness.
// While src has nothing to read, no goroutine serves the direction: the
// source is armed, one-shot, in the package's epoll instance; when it
// becomes readable (or hangs up), a goroutine is started that copies
// until the socket is empty and arms it again, or until the direction
// ends. At most one such goroutine runs per watch.
//
// The runtime's own poller keeps its registration of the socket; the
// copier reads the descriptor directly and never parks on it, so the two
// do not interfere.
type watch struct {
	j     *joint
	dst   net.Conn
	src   *tcpSource
	count *int64
	id    uint64

	mu    sync.Mutex
	state watchState
}

type watchState uint8

const (
	watchIdle   watchState = iota // armed, no copier running
	watchActive                   // a copier is running
	watchDone                     // the direction has ended
)

// watch returns a watch for the direction dst←src if src is a TCP
// connection that can be read on readiness, else nil. A TCP destination
// is left to the kernel's splice (copyBuffered).
func (j *joint) watch(dst, src net.Conn, count *int64) *watch {
	tc, ok := src.(*net.TCPConn)
	if !ok {
		return nil
	}
	if _, dstTCP := dst.(*net.TCPConn); dstTCP {
		return nil
	}
	if epoll.start() != nil {
		return nil
	}
	ts := newTCPSource(tc)
	if ts == nil {
		return nil
	}
	w := &watch{j: j, dst: dst, src: ts, count: count}
	epoll.add(w)
	return w
}

// watchedJoint returns the joint whose watched source c is, if any.
func watchedJoint(c net.Conn) *joint {
	if w, ok := watched.Load(c); ok {
		return w.(*watch).j
	}
	return nil
}

// watched maps each watched source connection to its watch, for Abort.
var watched sync.Map

// arm registers the source with the poller for the first time. A source
// that cannot be registered (already closed) ends the exchange.
func (w *watch) arm() {
	w.mu.Lock()
	if w.state == watchDone { // the exchange ended before this direction began
		w.mu.Unlock()
		return
	}
	watched.Store(w.src.c, w)
	err := w.ctl(syscall.EPOLL_CTL_ADD)
	if err != nil {
		w.state = watchDone
	}
	w.mu.Unlock()
	if err != nil {
		w.j.fail(err)
		w.finish()
	}
}

// ctl arms (ADD or MOD) the source, one-shot, for readability.
func (w *watch) ctl(op int) error {
	var cerr error
	err := w.src.rc.Control(func(fd uintptr) {
		ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | epollOneShot}
		ev.Fd, ev.Pad = int32(uint32(w.id)), int32(uint32(w.id>>32))
		cerr = syscall.EpollCtl(epoll.fd, op, int(fd), &ev)
	})
	if err != nil {
		return err
	}
	return cerr
}

// EPOLLONESHOT, which package syscall spells as a negative int.
const epollOneShot = 1 << 30

// fire is called by the poller when the source is readable: it starts a
// copier unless one runs or the direction has ended.
func (w *watch) fire() {
	if w.leaveIdle(watchActive) {
		go w.copy()
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

// copy moves what the source has to the destination, then arms the
// source again (rest), or ends the direction.
func (w *watch) copy() {
	var bp *[]byte
	for {
		var n int
		var err error
		var again bool
		bp, n, err, again = w.src.tryRead(bp)
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
		if n < len(*bp) {
			// Drained for now: no buffer held across the next wait.
			buffers.Put(bp)
			bp = nil
		}
	}
}

// rest arms the source again once it is empty. If the exchange is ending,
// or the source was closed under it, the direction ends instead.
func (w *watch) rest() {
	w.mu.Lock()
	if !w.j.failed.Load() {
		w.state = watchIdle
		if w.ctl(syscall.EPOLL_CTL_MOD) == nil {
			w.mu.Unlock()
			return
		}
	}
	w.state = watchDone
	w.mu.Unlock()
	w.j.fail(net.ErrClosed) // closed from outside: cut off (a no-op if ending)
	w.finish()
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
	w.j.ended(w.dst, w.src.c, err)
}

// finish ends the direction without a half-close: the exchange is over.
func (w *watch) finish() {
	w.unregister()
	w.j.finish()
}

func (w *watch) unregister() {
	if watched.CompareAndDelete(w.src.c, w) {
		w.src.rc.Control(func(fd uintptr) { syscall.EpollCtl(epoll.fd, syscall.EPOLL_CTL_DEL, int(fd), nil) })
		epoll.remove(w)
	}
}

// tryRead reads what the socket holds now, into bp or a newly borrowed
// buffer, without waiting. again reports that it held nothing (EAGAIN);
// the buffer has then gone back to the pool. At end of stream it returns
// io.EOF.
func (t *tcpSource) tryRead(bp *[]byte) (_ *[]byte, n int, err error, again bool) {
	t.bp, t.n, t.err = bp, 0, nil
	t.again = false
	if err := t.rc.Control(t.try); err != nil {
		return t.bp, 0, err, false // closed
	}
	switch {
	case t.again:
		return nil, 0, nil, true
	case t.err != nil:
		return t.bp, 0, t.opError(), false
	case t.n == 0:
		return t.bp, 0, io.EOF, false
	}
	return t.bp, t.n, nil, false
}

// epoll is the package's poller, started on first use; its goroutine runs
// while any watch is registered.
var epoll poller

type poller struct {
	once     sync.Once
	fd       int // the epoll instance
	wake     [2]int
	startErr error

	mu      sync.Mutex
	watches map[uint64]*watch
	next    uint64
	running bool
}

// wakeID is the event id of the wake pipe.
const wakeID = 0

func (p *poller) start() error {
	p.once.Do(func() {
		fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
		if err != nil {
			p.startErr = err
			return
		}
		if err := syscall.Pipe2(p.wake[:], syscall.O_NONBLOCK|syscall.O_CLOEXEC); err != nil {
			syscall.Close(fd)
			p.startErr = err
			return
		}
		ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: wakeID}
		if err := syscall.EpollCtl(fd, syscall.EPOLL_CTL_ADD, p.wake[0], &ev); err != nil {
			syscall.Close(fd)
			syscall.Close(p.wake[0])
			syscall.Close(p.wake[1])
			p.startErr = err
			return
		}
		p.fd = fd
		p.watches = map[uint64]*watch{}
		p.next = wakeID + 1
	})
	return p.startErr
}

// add gives w its id and makes sure the poller's goroutine runs.
func (p *poller) add(w *watch) {
	p.mu.Lock()
	defer p.mu.Unlock()
	w.id = p.next
	p.next++
	p.watches[w.id] = w
	if !p.running {
		p.running = true
		go p.loop()
	}
}

// remove forgets w; the last one out wakes the goroutine so that it ends.
func (p *poller) remove(w *watch) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.watches, w.id)
	if len(p.watches) == 0 && p.running {
		syscall.Write(p.wake[1], []byte{1})
	}
}

// loop waits for readiness and fires the watches, until none is left.
func (p *poller) loop() {
	events := make([]syscall.EpollEvent, 128)
	ready := make([]*watch, 0, len(events))
	var drain [64]byte
	for {
		n, err := syscall.EpollWait(p.fd, events, -1)
		if err != nil && !errors.Is(err, syscall.EINTR) {
			// Cannot happen with a valid instance and buffer; end every
			// watch rather than leave directions waiting forever.
			p.failAll(err)
			return
		}
		ready = ready[:0]
		p.mu.Lock()
		for _, ev := range events[:max(n, 0)] {
			id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			if id == wakeID {
				for {
					if k, _ := syscall.Read(p.wake[0], drain[:]); k <= 0 {
						break
					}
				}
				continue
			}
			if w := p.watches[id]; w != nil {
				ready = append(ready, w)
			}
		}
		if len(p.watches) == 0 {
			p.running = false
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
		for _, w := range ready {
			w.fire()
		}
	}
}

func (p *poller) failAll(err error) {
	p.mu.Lock()
	ws := make([]*watch, 0, len(p.watches))
	for _, w := range p.watches {
		ws = append(ws, w)
	}
	p.running = false
	p.mu.Unlock()
	for _, w := range ws {
		w.j.fail(err)
	}
}
