package pipe

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// tcpReady is a TCP source armed one-shot in the package's epoll
// instance. The runtime's own poller keeps its registration of the
// socket; the copier reads the descriptor directly and never parks on
// it, so the two do not interfere.
type tcpReady struct {
	*tcpSource
	id atomic.Uint64 // the event id, once registered with the poller (else 0)
}

// tcpReadySource returns c as a readySource, or nil if it cannot be one.
func tcpReadySource(c *net.TCPConn) readySource {
	if epoll.start() != nil {
		return nil
	}
	ts := newTCPSource(c)
	if ts == nil {
		return nil
	}
	return &tcpReady{tcpSource: ts}
}

func (t *tcpReady) conn() net.Conn { return t.c }

func (t *tcpReady) arm(w *watch) error {
	op := syscall.EPOLL_CTL_MOD
	id := t.id.Load()
	if id == 0 {
		op = syscall.EPOLL_CTL_ADD
		id = epoll.add(w)
		t.id.Store(id)
	}
	var cerr error
	err := t.rc.Control(func(fd uintptr) {
		ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | epollOneShot}
		ev.Fd, ev.Pad = int32(uint32(id)), int32(uint32(id>>32))
		cerr = syscall.EpollCtl(epoll.fd, op, int(fd), &ev)
	})
	if err != nil {
		return err
	}
	return cerr
}

func (t *tcpReady) disarm(w *watch) {
	id := t.id.Load()
	if id == 0 {
		return // never armed
	}
	t.rc.Control(func(fd uintptr) { syscall.EpollCtl(epoll.fd, syscall.EPOLL_CTL_DEL, int(fd), nil) })
	epoll.remove(id)
}

// EPOLLONESHOT, which package syscall spells as a negative int.
const epollOneShot = 1 << 30

// read reads what the socket holds, into bp or a newly borrowed buffer,
// waiting at most wait (see readySource): parked in the runtime's poller
// with no buffer held, or not at all.
func (t *tcpReady) read(bp *[]byte, wait time.Duration) (_ *[]byte, n int, err error, again bool) {
	if wait > 0 {
		t.c.SetReadDeadline(time.Now().Add(wait))
		bp, n, err := t.Read(bp)
		t.c.SetReadDeadline(time.Time{})
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return bp, 0, nil, true // bp is nil: Read gives it back before it parks
		}
		return bp, n, err, false
	}
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
// while any watch is registered, and ends when the last one goes. One
// instance serves the process, as the runtime's own poller does: it holds
// nothing of its callers' but the registrations of live watches.
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

// add registers w under a new id and makes sure the poller's goroutine
// runs.
func (p *poller) add(w *watch) uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	id := p.next
	p.next++
	p.watches[id] = w
	if !p.running {
		p.running = true
		go p.loop()
	}
	return id
}

// remove forgets id; the last one out wakes the goroutine so that it ends.
func (p *poller) remove(id uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.watches, id)
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
			w.wake()
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
