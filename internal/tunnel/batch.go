package tunnel

import (
	"encoding/binary"
	"net"
	"sync"
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
// connection's own back-pressure). An error from the connection is
// returned by every Write after it. Write is called by yamux's single send
// goroutine; Close may be called from any goroutine.
type batchWriter struct {
	net.Conn

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

	done chan struct{} // closed when the flusher has returned
}

// maxPending bounds the bytes that wait to be flushed.
const maxPending = 256 << 10

// yamux v0 frame header: version, type, flags, stream id, length.
const (
	muxHeaderSize = 12
	muxTypeData   = 0
)

func newBatchWriter(c net.Conn) *batchWriter {
	w := &batchWriter{Conn: c, done: make(chan struct{})}
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
	if w.held == 0 && len(p) == muxHeaderSize && p[1] == muxTypeData && binary.BigEndian.Uint32(p[8:]) > 0 {
		w.held = muxHeaderSize
		return len(p), nil
	}
	w.held = 0
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

		_, err := w.Conn.Write(out)

		w.mu.Lock()
		w.writing = false
		w.wake.Broadcast()
		if err != nil {
			w.err = err
			w.wake.Broadcast()
			w.mu.Unlock()
			return
		}
		if cap(out) <= 2*maxPending {
			w.spare = out[:0]
		}
		w.mu.Unlock()
	}
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
	w.Conn.SetWriteDeadline(time.Now().Add(timeout))
	defer w.Conn.SetWriteDeadline(time.Time{})
	w.mu.Lock()
	defer w.mu.Unlock()
	for (len(w.pending) > 0 || w.writing) && w.err == nil && !w.closing {
		w.wake.Wait()
	}
	return w.err
}
