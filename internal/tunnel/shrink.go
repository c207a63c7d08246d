package tunnel

// shrinkIdle gives back the receive buffers of streams that have nothing
// buffered. yamux keeps a stream's receive buffer at the size of its
// largest backlog (up to the window, 1 MiB) until Shrink; shrinking after
// every read halves throughput (docs/decisions.md), so the keepalive tick
// sweeps instead: a stream that is busy at that moment only allocates its
// buffer again.
func (s *Session) shrinkIdle() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range s.streams {
		st.ms.Shrink()
	}
}
