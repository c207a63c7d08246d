package store

import (
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// Cluster members tell each other they are there with a core NATS message
// on heartbeatSubject every heartbeatEvery: no JetStream leader is needed
// to send or receive it, so it flows during leader elections, and it
// stops at once across a partition (a silently dropped route stays open
// for minutes, but carries nothing). Only members can publish it: the
// routes take route certificates of the edge CA, and each member's client
// port is on loopback behind a token held in memory.
const (
	heartbeatSubject = "sallyport.members.heartbeat"
	heartbeatEvery   = 250 * time.Millisecond
	// maxHeard bounds the member names remembered.
	maxHeard = 256
)

// heard is when each other member's heartbeat last came, by server name.
type heard struct {
	mu sync.Mutex
	at map[string]time.Time
}

// startHeartbeats sends this member's heartbeat until the store closes
// and notes the others'.
func (s *JetStream) startHeartbeats() error {
	s.heard.at = make(map[string]time.Time)
	sub, err := s.nc.Subscribe(heartbeatSubject, func(m *nats.Msg) {
		name := string(m.Data)
		if name == s.name || name == "" || len(name) > 128 {
			return
		}
		s.heard.mu.Lock()
		defer s.heard.mu.Unlock()
		if _, ok := s.heard.at[name]; ok || len(s.heard.at) < maxHeard {
			s.heard.at[name] = time.Now()
		}
	})
	if err != nil {
		return err
	}
	s.raising.Go(func() {
		defer sub.Unsubscribe()
		t := time.NewTicker(heartbeatEvery)
		defer t.Stop()
		for {
			s.nc.Publish(heartbeatSubject, []byte(s.name))
			select {
			case <-s.stopRaise:
				return
			case <-t.C:
			}
		}
	})
	return nil
}

// Quorum reports whether this store is a member of a cluster of
// embedded servers, and if so whether it has heard, within the last
// window, from enough members (itself included) to make a quorum of the
// cluster: then no write can commit without a member it hears, and a
// store that does not answer it is electing leaders, not going on without
// it. A member cut off from the others hears none of them. A single node
// or an external store is no member and hears no quorum.
func (s *JetStream) Quorum(window time.Duration) (member, hears bool) {
	if s.srv == nil || !s.member {
		return false, false
	}
	now := time.Now()
	s.heard.mu.Lock()
	members, recent := 1+len(s.heard.at), 1
	for _, at := range s.heard.at {
		if now.Sub(at) <= window {
			recent++
		}
	}
	s.heard.mu.Unlock()
	if jsz, err := s.srv.Jsz(nil); err == nil && jsz.Meta != nil {
		members = max(members, jsz.Meta.Size)
	}
	return true, 2*recent > members
}
