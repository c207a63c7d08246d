package tunnel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// batchWriter sits between the multiplexer and the tunnel connection and
// gathers the frames that yamux writes one at a time into few large
// writes: one TLS record holds many small frames, and one system call
// many records.
//
// yamux writes each data frame as two Writes, a 12-byte header and then
// its body, and waits for each Write before it takes the next frame from
// any stream. Here a Write only appends to a pending buffer and returns;
// a flusher goroutine writes out whatever has gathered whenever the
// connection can take more. While it writes, later frames gather behind
// it, so a busy tunnel sends fewer, larger writes and an idle one sends
// each frame at once. A data header is never written without its body.
//
// At most maxPending bytes wait; beyond that Write blocks (the
// connection's own back-pressure). The flusher writes to the connection
// in pieces of at most writeChunk bytes, each under a deadline of stall
// from its start: a slow peer that goes on reading may take as long as it
// needs for the whole, but one that takes nothing for stall has stopped
// reading (ErrPeerNotReading). An error from the connection closes it at
// once (abort: so that its reader fails too) and is returned by every
// Write after it. Write is called by yamux's single send goroutine; Close may
// be called from any goroutine.
type batchWriter struct {
	net.Conn
	stall time.Duration
	// answered counts the ping answers written (readTap.answered).
	answered *atomic.Uint64

	// mu guards the fields below; wake is signalled when pending grows,
	// when it is taken for writing, and on close or error.
	mu      sync.Mutex
	wake    *sync.Cond
	pending []byte
	// held is the length of a data header at the end of pending whose
	// body has not been written yet: not to be flushed alone.
	held    int
	spare   []byte
	err     error
	closing bool
	// writing is set while the flusher writes to the connection.
	writing bool
	// flushBy is the deadline of a Flush under way, else zero.
	flushBy time.Time

	done chan struct{} // closed when the flusher has returned
	// tr is the Transport beneath the connection's TLS, if any.
	tr *Transport
}

// maxPending bounds the bytes that wait to be flushed.
const maxPending = 256 << 10

// yamux v0 frame header: version, type, flags, stream id, length.
const (
	muxHeaderSize = 12
	muxTypeData   = 0
)

// newBatchWriter starts a batch writer on c that takes a peer which
// takes nothing for stall for one that has stopped reading, and counts
// the ping answers it writes in answered.
func newBatchWriter(c net.Conn, stall time.Duration, answered *atomic.Uint64) *batchWriter {
	w := &batchWriter{Conn: c, stall: stall, answered: answered, done: make(chan struct{}), tr: transportOf(c)}
	w.wake = sync.NewCond(&w.mu)
	go w.flush()
	return w
}

// Write appends p to the pending bytes.
func (w *batchWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for len(w.pending) >= maxPending && w.err == nil && !w.closing {
		w.wake.Wait()
	}
	if w.err != nil {
		return 0, w.err
	}
	if w.closing {
		return 0, net.ErrClosed
	}
	w.pending = append(w.pending, p...)
	// After a held header comes its body, whatever it looks like: a
	// 12-byte body that resembled a header must not be held in turn.
	header := w.held == 0 && len(p) == muxHeaderSize
	w.held = 0
	switch {
	case header && p[1] == muxTypeData && binary.BigEndian.Uint32(p[8:]) > 0:
		w.held = muxHeaderSize
		return len(p), nil
	case header && p[1] == muxTypePing && binary.BigEndian.Uint16(p[2:])&muxFlagACK != 0:
		w.answered.Add(1)
	}
	w.wake.Broadcast()
	return len(p), nil
}

// flush writes out the pending bytes until the writer closes or the
// connection fails.
func (w *batchWriter) flush() {
	defer close(w.done)
	var out []byte
	for {
		w.mu.Lock()
		for len(w.pending)-w.held == 0 && !w.closing && w.err == nil {
			w.wake.Wait()
		}
		n := len(w.pending) - w.held
		if w.closing || w.err != nil {
			w.mu.Unlock()
			return
		}
		// Hand the pending bytes to the connection and start a new
		// buffer with the held header, if any.
		out = w.pending[:n]
		next := append(w.spare[:0], w.pending[n:]...)
		w.pending, w.spare = next, nil
		w.writing = true
		w.wake.Broadcast()
		w.mu.Unlock()

		err := w.writeOut(out)

		w.mu.Lock()
		w.writing = false
		w.wake.Broadcast()
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) && w.flushBy.IsZero() {
				err = fmt.Errorf("%w (%s): %w", ErrPeerNotReading, w.stall, err)
			}
			w.err = err
			closing := w.closing
			w.mu.Unlock()
			if !closing {
				// Its reader fails too, and the multiplexer ends the
				// session even if it has nothing more to write.
				abort(w.Conn)
			}
			return
		}
		if cap(out) <= 2*maxPending {
			w.spare = out[:0]
		}
		w.mu.Unlock()
	}
}

// writeOut writes out to the connection in pieces of at most writeChunk
// bytes, each with a deadline of stall from its start, or Flush's if it
// is sooner.
func (w *batchWriter) writeOut(out []byte) error {
	for len(out) > 0 {
		w.mu.Lock()
		deadline := time.Now().Add(w.stall)
		if !w.flushBy.IsZero() && w.flushBy.Before(deadline) {
			deadline = w.flushBy
		}
		w.Conn.SetWriteDeadline(deadline)
		w.mu.Unlock()
		// Beneath TLS, the records of a chunk are gathered and written
		// as one (transport.go).
		if w.tr != nil {
			w.tr.cork()
		}
		n, err := w.Conn.Write(out[:min(len(out), writeChunk)])
		if w.tr != nil {
			if uerr := w.tr.uncork(); err == nil {
				err = uerr
			}
		}
		if err != nil {
			return err
		}
		out = out[n:]
	}
	return nil
}

// failure returns the error that stopped the flusher, if any.
func (w *batchWriter) failure() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// Close closes the connection at once and stops the flusher. Bytes still
// gathered are dropped, as they would be in a dead connection's buffers:
// a session that ends without Shutdown leaves cut-off streams, never
// ones that look complete by chance. Shutdown flushes first.
func (w *batchWriter) Close() error {
	w.mu.Lock()
	w.closing = true
	w.wake.Broadcast()
	w.mu.Unlock()
	err := w.Conn.Close()
	<-w.done
	return err
}

// Flush waits until every byte written so far has been handed to the
// connection, for at most timeout.
func (w *batchWriter) Flush(timeout time.Duration) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	// The deadline applies to a write under way too; the flusher gives
	// the next ones their own.
	w.flushBy = time.Now().Add(timeout)
	w.Conn.SetWriteDeadline(w.flushBy)
	defer func() { w.flushBy = time.Time{} }()
	for (len(w.pending) > 0 || w.writing) && w.err == nil && !w.closing {
		w.wake.Wait()
	}
	return w.err
}
