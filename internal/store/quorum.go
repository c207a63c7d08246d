package store

import (
	"sync"
	"time"
)

// heard follows, per route peer, when a message last came in from it: a
// route's inbound count grows with every Raft heartbeat and reply
// (about every second from each peer that leads a group or follows one
// this server leads) and with every write that peer forwards.
type heard struct {
	mu sync.Mutex
	in map[string]int64     // inbound messages last seen, by peer name
	at map[string]time.Time // when that count last changed
}

// HearsQuorum reports whether this cluster member has heard, within the
// last window, from enough servers (itself included) to make a quorum of
// the cluster: then no write can commit without a server it hears, and a
// store that does not answer it is electing leaders, not going on
// without it. A member cut off from the others hears none of them (a
// silently dropped route stays open for minutes, but brings nothing in).
// Always false for a single node or an external store, which have no
// routes to judge by.
func (s *JetStream) HearsQuorum(window time.Duration) bool {
	if s.srv == nil || !s.member {
		return false
	}
	jsz, err := s.srv.Jsz(nil)
	if err != nil || jsz.Meta == nil {
		return false
	}
	rz, err := s.srv.Routez(nil)
	if err != nil {
		return false
	}
	in := map[string]int64{}
	for _, r := range rz.Routes {
		if r.RemoteName != "" {
			in[r.RemoteName] += r.InMsgs
		}
	}
	now := time.Now()
	h := &s.heard
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.in == nil {
		h.in, h.at = map[string]int64{}, map[string]time.Time{}
	}
	servers := 1
	for name, n := range in {
		if old, ok := h.in[name]; !ok || n != old { // a new route, or more in (or a reconnection's fresh count)
			h.at[name] = now
		}
		h.in[name] = n
		if now.Sub(h.at[name]) <= window {
			servers++
		}
	}
	return 2*servers > max(jsz.Meta.Size, len(in)+1)
}
