package mux

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// The session's writer: one goroutine that owns the writing of the
// connection.
//
// Streams and the reading goroutine append whole frames (header and
// body, copied once) to the outgoing buffer under writer.mu; the writing
// goroutine swaps it for its spare and writes the whole batch with one
// Write of the connection (through TLS on a Transport: one system call).
// Control frames (window updates, ping answers, FIN, RST, go-away) are
// appended whatever the buffer holds, so that the reading goroutine never
// waits for the writing one: two sides that send each other bulk data at
// once would otherwise wait for each other for good. Data waits while the
// buffer holds outLimit bytes or more (see Stream.Write).
//
// Pings, their answers and window updates go in a second buffer, prio,
// written ahead of the data queued with them: they need no order with the
// streams' bytes, and so a ping's answer waits at most for the batch
// being written (a peer with more than maxPeerPings answers that wait
// for that breaks the protocol), and credit is not held up behind data.

// outLimit is the outgoing buffer's size from which data waits.
const outLimit = 256 << 10

// controlLimit bounds the outgoing buffer for control frames: a peer
// that makes this side answer (opening streams beyond the backlog) and
// never reads the answers is cut off.
const controlLimit = 8 << 20

// maxKept is the largest buffer kept for the next batch.
const maxKept = 2 << 20

// batchBuffers lends the outgoing data buffers (out and spare): a session
// holds them while it has frames to write and gives them back when its
// writer finds nothing more to write, so that a tunnel at rest after a
// bulk transfer holds none (it kept two of outLimit and more for good).
// Each is lent in its box, which goes back with it: no allocation.
var batchBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}

// outBuf makes sure the outgoing buffer is there to append to; w.mu is
// held.
func (w *writer) outBuf() {
	if w.outBox == nil {
		w.outBox = batchBuffers.Get().(*[]byte)
		w.out = (*w.outBox)[:0]
	}
}

// giveBack returns buffer b and its box to batchBuffers, unless b has
// grown past maxKept (the collector takes it) or there is none.
func giveBack(b []byte, box *[]byte) {
	if box != nil && cap(b) <= maxKept {
		*box = b[:0]
		batchBuffers.Put(box)
	}
}

// writer is a session's outgoing side.
type writer struct {
	// wake tells the writing goroutine that the buffer has frames.
	wake chan struct{}
	// room tells a data writer that waits that the buffer has room; each
	// one told passes it on if room is left (see waitRoom).
	room chan struct{}

	// mu guards the outgoing buffers and what they hold.
	mu        sync.Mutex
	out, prio []byte
	spare     []byte // out's, while it is not being written
	prioSpare []byte
	// outBox and spareBox hold out and spare while they are lent by
	// batchBuffers (nil: not lent; out is then empty).
	outBox, spareBox *[]byte
	pings            uint64 // ping answers in prio
	// goAway is closed once the go-away queued (goAwayQueued) has been
	// written.
	goAway       chan struct{}
	goAwayQueued bool
	// waiting counts the data writers waiting for room.
	waiting int
	// queued counts the frames ever queued (the session's).
	queued *atomic.Uint64
}

// appendControl appends a frame with no body. It never waits. The
// caller may hold the session's lock or a stream's.
func (s *Session) appendControl(typ uint8, flags uint16, stream, length uint32) {
	w := &s.w
	w.mu.Lock()
	if typ == typePing || typ == typeWindowUpdate && flags == 0 {
		w.prio = appendHeader(w.prio, typ, flags, stream, length)
		if flags&flagACK != 0 {
			w.pings++
		}
	} else {
		w.outBuf()
		w.out = appendHeader(w.out, typ, flags, stream, length)
	}
	s.queued.Add(1)
	if len(w.out)+len(w.prio) > controlLimit {
		// The reader ends the session (it may not be the caller).
		s.overflow.Store(true)
	}
	w.mu.Unlock()
	w.signal()
}

// signal wakes the writing goroutine.
func (w *writer) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// tryAppendData appends a data frame with body p, if the buffer has
// room, and reports whether it did. The caller holds the stream's lock.
func (w *writer) tryAppendData(flags uint16, stream uint32, p []byte) bool {
	w.mu.Lock()
	if len(w.out) >= outLimit {
		w.mu.Unlock()
		return false
	}
	w.outBuf()
	w.out = appendHeader(w.out, typeData, flags, stream, uint32(len(p)))
	w.out = append(w.out, p...)
	w.queued.Add(1)
	w.mu.Unlock()
	w.signal()
	return true
}

// waitRoom waits until the outgoing buffer has room for data, the
// deadline passes (zero: none), the session ends, or retry is signalled
// (the stream's: its deadline moved, it was closed); it returns nil when
// the caller should look again. timer is the caller's, made on demand.
func (s *Session) waitRoom(deadline time.Time, timer **time.Timer, retry chan struct{}) error {
	w := &s.w
	w.mu.Lock()
	if len(w.out) < outLimit {
		w.mu.Unlock()
		return nil
	}
	w.waiting++
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		w.waiting--
		pass := w.waiting > 0 && len(w.out) < outLimit
		w.mu.Unlock()
		if pass {
			select {
			case w.room <- struct{}{}:
			default:
			}
		}
	}()
	expired, err := armTimer(timer, deadline)
	if err != nil {
		return err
	}
	select {
	case <-w.room:
		return nil
	case <-retry:
		return nil
	case <-s.done:
		return s.err
	case <-expired:
		return errTimeout
	}
}

// armTimer arms *t (made on first use) to fire at deadline and returns
// its channel: nil for no deadline (zero), errTimeout if it has passed.
func armTimer(t **time.Timer, deadline time.Time) (<-chan time.Time, error) {
	if deadline.IsZero() {
		return nil, nil
	}
	d := time.Until(deadline)
	if d <= 0 {
		return nil, errTimeout
	}
	if *t == nil {
		*t = time.NewTimer(d)
	} else {
		(*t).Reset(d)
	}
	return (*t).C, nil
}

// stopTimer stops *t, if it was made.
func stopTimer(t **time.Timer) {
	if *t != nil {
		(*t).Stop()
	}
}

// GoAway queues a go-away behind everything queued before it, and
// returns a channel that is closed once it has been written (or the
// session has ended). The peer ends the session when it reads it.
func (s *Session) GoAway() <-chan struct{} {
	w := &s.w
	w.mu.Lock()
	if !w.goAwayQueued {
		w.goAwayQueued = true
		w.outBuf()
		w.out = appendHeader(w.out, typeGoAway, 0, 0, goAwayNormal)
		s.queued.Add(1)
	}
	ch := w.goAway
	w.mu.Unlock()
	w.signal()
	return ch
}

// write is the writing goroutine: it writes each batch with one Write
// until the session ends or a write fails.
func (s *Session) write() {
	w := &s.w
	for {
		select {
		case <-w.wake:
		case <-s.done:
			return
		}
		w.mu.Lock()
		batch, batchBox, prio, goAway := w.out, w.outBox, w.prio, w.goAwayQueued
		w.out, w.outBox, w.spare, w.spareBox = w.spare[:0], w.spareBox, nil, nil
		w.prio, w.prioSpare = w.prioSpare[:0], nil
		// The answers taken are on their way.
		s.answered.Add(w.pings)
		w.pings = 0
		pass := w.waiting > 0
		w.mu.Unlock()
		if pass {
			select {
			case w.room <- struct{}{}:
			default:
			}
		}
		if err := s.writeBatch(prio, batch); err != nil {
			s.fail(fmt.Errorf("write to the connection: %w", err))
			return
		}
		if goAway {
			w.mu.Lock()
			select {
			case <-w.goAway:
			default:
				close(w.goAway)
			}
			w.mu.Unlock()
		}
		w.mu.Lock()
		if len(w.out) == 0 {
			// Nothing more to write: the data buffers go back until
			// there is.
			giveBack(batch, batchBox)
			giveBack(w.out, w.outBox)
			w.out, w.outBox = nil, nil
		} else if cap(batch) <= maxKept {
			w.spare, w.spareBox = batch[:0], batchBox
		}
		if cap(prio) <= maxKept {
			w.prioSpare = prio[:0]
		}
		w.mu.Unlock()
	}
}

// BatchWriter is a connection that writes two buffers, one after the
// other, as one write (the tunnel's: one system call); a session writes
// its batches with WriteBatch if its connection has it.
type BatchWriter interface {
	WriteBatch(first, second []byte) error
}

// writeBatch writes prio, then out.
func (s *Session) writeBatch(prio, out []byte) error {
	switch {
	case len(prio) == 0 && len(out) == 0:
		return nil
	case len(prio) == 0:
		_, err := s.conn.Write(out)
		return err
	case len(out) == 0:
		_, err := s.conn.Write(prio)
		return err
	}
	if bw, ok := s.conn.(BatchWriter); ok {
		return bw.WriteBatch(prio, out)
	}
	if _, err := s.conn.Write(prio); err != nil {
		return err
	}
	_, err := s.conn.Write(out)
	return err
}
