package tunnel

import (
	"encoding/binary"
	"time"

	yamux "github.com/libp2p/go-yamux/v5"
)

// Read readiness without a waiting goroutine (Stream.NotifyRead).
//
// go-yamux wakes a stream's reader through a channel inside the stream,
// so whoever wants to know that a stream has bytes would have to wait in
// its Read: a goroutine per idle stream. Instead the tunnel watches the
// frames as the multiplexer reads them off the connection (frameTap, in
// the tap under go-yamux's read buffer). A frame that ends in bytes for a
// stream, or in its end (FIN) or reset (RST), makes the stream readable.
// The multiplexer has handled every frame that came whole in the bytes of
// earlier reads by the time it asks for more, so the streams whose frames
// completed are told at the start of the next read, before it waits.
// (go-yamux holds no lock of a stream while it reads a frame's body, so a
// stream told may read at once.)

// yamux v0 frame header (version, type, flags, stream id, length); frame
// types and flags, as on the wire.
const (
	muxHeaderSize       = 12
	muxTypeData         = 0
	muxTypeWindowUpdate = 1
	muxTypePing         = 2
	muxTypeGoAway       = 3
	muxFlagSYN          = 1
	muxFlagACK          = 2
	muxFlagFIN          = 4
	muxFlagRST          = 8
)

// frameTap follows the frame boundaries of the bytes the multiplexer
// reads. It is used by the connection's single reading goroutine.
type frameTap struct {
	hdr  [muxHeaderSize]byte
	hn   int    // header bytes gathered
	body uint32 // bytes left of the current data frame's body
	id   uint32 // the current data frame's stream
	// done lists the streams with a frame completed since the last Read.
	done []uint32
	// n counts the frames completed; pings the peer's ping requests,
	// opens the streams it opened (frames with SYN; see guard.go).
	n, pings, opens uint64
	// longest is the longest data frame's length.
	longest uint32
}

// feed follows p, the next bytes read.
func (t *frameTap) feed(p []byte) {
	for len(p) > 0 {
		if t.body > 0 {
			k := uint32(min(len(p), int(min(t.body, 1<<30))))
			p, t.body = p[k:], t.body-k
			if t.body == 0 {
				t.n++
				t.readable(t.id)
			}
			continue
		}
		k := copy(t.hdr[t.hn:], p)
		p, t.hn = p[k:], t.hn+k
		if t.hn < muxHeaderSize {
			return
		}
		t.hn = 0
		typ, flags := t.hdr[1], binary.BigEndian.Uint16(t.hdr[2:])
		id, length := binary.BigEndian.Uint32(t.hdr[4:]), binary.BigEndian.Uint32(t.hdr[8:])
		switch {
		case typ == muxTypePing && flags&muxFlagSYN != 0:
			t.pings++
		case typ <= muxTypeWindowUpdate && flags&muxFlagSYN != 0:
			t.opens++
		}
		if typ == muxTypeData && length > 0 {
			t.body, t.id = length, id
			t.longest = max(t.longest, length)
			continue
		}
		t.n++
		if typ == muxTypeData || typ == muxTypeWindowUpdate && flags&(muxFlagFIN|muxFlagRST) != 0 {
			t.readable(id)
		}
	}
}

// readable notes that stream id has become readable.
func (t *frameTap) readable(id uint32) {
	if n := len(t.done); n > 0 && t.done[n-1] == id {
		return
	}
	t.done = append(t.done, id)
}

// readable tells the streams in ids that a Read would not block.
func (s *Session) readable(ids []uint32) {
	var sts [16]*Stream
	for len(ids) > 0 {
		batch := ids[:min(len(ids), len(sts))]
		ids = ids[len(batch):]
		found := sts[:0]
		s.mu.Lock()
		for _, id := range batch {
			if st := s.streams[id]; st != nil {
				found = append(found, st)
			}
		}
		s.mu.Unlock()
		for _, st := range found {
			st.readable()
		}
	}
}

// readableAll tells every stream that a Read would not block: the
// session has ended.
func (s *Session) readableAll() {
	s.mu.Lock()
	sts := make([]*Stream, 0, len(s.streams))
	for _, st := range s.streams {
		sts = append(sts, st)
	}
	s.mu.Unlock()
	for _, st := range sts {
		st.readable()
	}
}

// NotifyRead arranges for f to be called once, as soon as a Read would not
// block: bytes are there, the peer has finished or reset the stream, or
// the session has ended. If that is so already, f is called before
// NotifyRead returns; else it is called from the tunnel's reading
// goroutine, which f must not block. A later call replaces an f not yet
// called; NotifyRead(nil) cancels it.
func (s *Stream) NotifyRead(f func()) {
	// The probe runs under notifyMu, before f is published: the tunnel's
	// reader, which takes notifyMu to call f, cannot start a reader of
	// the stream while the probe still plays with its read deadline.
	s.notifyMu.Lock()
	if f != nil && s.wouldNotBlock() {
		s.onReadable = nil
		s.notifyMu.Unlock()
		f()
		return
	}
	s.onReadable = f
	s.notifyMu.Unlock()
}

// readable calls the function NotifyRead left, if any.
func (s *Stream) readable() {
	s.notifyMu.Lock()
	f := s.onReadable
	s.onReadable = nil
	s.notifyMu.Unlock()
	if f != nil {
		f()
	}
}

// wouldNotBlock reports whether a Read would return at once, without
// taking any byte.
func (s *Stream) wouldNotBlock() bool { return s.readableBy(time.Unix(1, 0)) }

// WaitReadFor waits at most d until a Read would not block, and reports
// whether it would not. It takes no byte, and no buffer.
func (s *Stream) WaitReadFor(d time.Duration) bool { return s.readableBy(time.Now().Add(d)) }

// readableBy waits until deadline for a Read that would not block.
func (s *Stream) readableBy(deadline time.Time) bool {
	return s.sess.IsClosed() || s.wait(deadline) != yamux.ErrTimeout
}

// TryRead reads what the stream holds without waiting: wait reports that
// it holds nothing yet (call NotifyRead). Otherwise it is Read, with the
// edge side's first read of the connector's reply (which waits for the
// rest of a reply that has begun to come).
func (s *Stream) TryRead(b []byte) (n int, wait bool, err error) {
	if !s.wouldNotBlock() {
		return 0, true, nil
	}
	n, err = s.Read(b)
	return n, false, err
}
