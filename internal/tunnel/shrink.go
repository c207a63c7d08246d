package tunnel

// shrinkIdle gives back the receive buffers of streams that have nothing
// buffered. yamux keeps a stream's receive buffer at the size of its
// largest backlog (up to the window, 1 MiB) until Shrink; shrinking after
// every read halves throughput (docs/decisions.md), so the keepalive tick
// sweeps instead (sweepSoon): a stream that is busy at that moment only
// allocates its buffer again.
//
// Shrink takes the stream's receive lock, which yamux holds while it reads
// a frame's body off the connection: on a link that went silent in the
// middle of a frame, that is until the session closes. So the sweep holds
// no lock of the session's while it shrinks, and never runs in the
// keepalive's own goroutine, which must go on to find the silence.
func (s *Session) shrinkIdle() {
	s.mu.Lock()
	streams := make([]*Stream, 0, len(s.streams))
	for _, st := range s.streams {
		streams = append(streams, st)
	}
	s.mu.Unlock()
	for _, st := range streams {
		st.ms.Shrink()
	}
}

// sweepSoon runs shrinkIdle in a goroutine of the session's, unless the
// last sweep is still running.
func (s *Session) sweepSoon() {
	if !s.sweeping.CompareAndSwap(false, true) {
		return
	}
	s.wg.Go(func() {
		defer s.sweeping.Store(false)
		s.shrinkIdle()
	})
}
