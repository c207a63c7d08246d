package tunnel

import "time"

// Read readiness without a waiting goroutine: the multiplexer calls a
// stream's NotifyRead function from its reading goroutine as soon as the
// stream has something, so a relay at rest holds neither a goroutine nor
// a buffer per stream.

// NotifyRead arranges for f to be called once, as soon as a Read would not
// block: bytes are there, the peer has finished or reset the stream, or
// the session has ended. If that is so already, f is called before
// NotifyRead returns; else it is called from the tunnel's reading
// goroutine, which f must not block. A later call replaces an f not yet
// called; NotifyRead(nil) cancels it.
func (s *Stream) NotifyRead(f func()) { s.ms.NotifyRead(f) }

// WaitReadFor waits at most d until a Read would not block, and reports
// whether it would not. It takes no byte, and no buffer.
func (s *Stream) WaitReadFor(d time.Duration) bool { return s.ms.WaitReadable(d) }

// TryRead reads what the stream holds without waiting: wait reports that
// it holds nothing yet (call NotifyRead). Otherwise it is Read, with the
// edge side's first read of the connector's reply (which waits for the
// rest of a reply that has begun to come).
func (s *Stream) TryRead(b []byte) (n int, wait bool, err error) {
	if !s.ms.Readable() {
		return 0, true, nil
	}
	n, err = s.Read(b)
	return n, false, err
}
