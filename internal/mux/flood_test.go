package mux

import (
	"errors"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// A peer that floods frames costs next to nothing: pings it does not
// read the answers to, streams opened by the wrong side or with ids that
// go back, and data frames longer than any window break the protocol and
// end the session, with an error that says so; window updates (for a
// stream that exists and for ones that do not) only add to counters.
func TestFloodsAreBounded(t *testing.T) {
	for _, tc := range []struct {
		name  string
		opens bool // the session under test opens streams
		frame func(i uint32) []byte
		reads bool // the flooding peer reads what it is sent
		want  string
		lasts bool // the session stays up
	}{
		{"pings", false, func(i uint32) []byte { return frame(typePing, flagSYN, 0, i) }, false, "pings", false},
		{"opens by the wrong side", true, func(i uint32) []byte { return frame(typeWindowUpdate, flagSYN, 1+2*i, 0) }, true, "opened", false},
		{"ids that go back", false, func(i uint32) []byte { return frame(typeWindowUpdate, flagSYN, 10, 0) }, true, "not above", false},
		{"oversized data", false, func(i uint32) []byte { return frame(typeData, 0, 7, MaxWindow+1) }, true, "longer than any", false},
		{"opens beyond the backlog", false, func(i uint32) []byte { return frame(typeWindowUpdate, flagSYN, 2+2*i, 0) }, true, "", true},
		{"window updates", true, func(i uint32) []byte { return frame(typeWindowUpdate, 0, 2+2*(i%4), 1<<20) }, false, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var wg sync.WaitGroup
			t.Cleanup(wg.Wait)
			c, peer := tcpPair(t)
			// Small buffers: a peer that does not read is soon found out.
			c.(*net.TCPConn).SetWriteBuffer(16 << 10)
			peer.(*net.TCPConn).SetReadBuffer(16 << 10)
			s := New(c, Config{Opens: tc.opens, AcceptBacklog: 64})
			t.Cleanup(func() { s.Close() })
			if tc.reads {
				wg.Go(func() { io.Copy(io.Discard, peer) })
			}
			runtime.GC()
			g0 := runtime.NumGoroutine()
			var m0 runtime.MemStats
			runtime.ReadMemStats(&m0)
			var b []byte
			var err error
			for i := range uint32(200_000) {
				b = append(b, tc.frame(i)...)
				if len(b) >= 48<<10 {
					peer.SetWriteDeadline(time.Now().Add(10 * time.Second))
					if _, err = peer.Write(b); err != nil {
						break
					}
					b = b[:0]
				}
			}
			if tc.lasts {
				if err != nil {
					t.Fatalf("the flood's write failed: %v (session error %v)", err, s.Err())
				}
				// Everything written has been handled.
				peer.Write(frame(typePing, flagACK, 0, 0))
				eventually(t, 10*time.Second, func() bool { return s.FramesHandled() >= 200_000-uint64(len(b))/headerSize }, "the flood is handled")
				if s.Err() != nil {
					t.Fatalf("the session ended: %v", s.Err())
				}
			} else {
				within(t, 10*time.Second, s.Done(), "the session ends")
				if err := s.Err(); !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("the session's error is %v; want a protocol violation that names %q", err, tc.want)
				}
			}
			var m1 runtime.MemStats
			runtime.ReadMemStats(&m1)
			if g := runtime.NumGoroutine() - g0; g > 10 {
				t.Errorf("%d goroutines more during the flood", g)
			}
			if grew := int64(m1.HeapInuse) - int64(m0.HeapInuse); grew > 16<<20 {
				t.Errorf("the heap grew by %d MiB", grew>>20)
			}
			peer.Close()
		})
	}
}

// FuzzFrames feeds arbitrary bytes to a session as its peer's frames:
// it never panics, holds bounded memory, and ends, if it ends, with an
// error that says why.
func FuzzFrames(f *testing.F) {
	f.Add(false, append(frame(typeWindowUpdate, flagSYN, 2, 0), append(frame(typeData, flagFIN, 2, 3), "abc"...)...))
	f.Add(true, frame(typePing, flagSYN, 0, 7))
	f.Add(false, frame(typeGoAway, 0, 0, 1))
	f.Add(false, []byte("not a frame at all"))
	f.Add(false, append(frame(typeData, flagSYN, 4, 1<<20), make([]byte, 100)...))
	f.Fuzz(func(t *testing.T, opens bool, b []byte) {
		c, peer := net.Pipe()
		s := New(c, Config{Opens: opens, ReceiveBudget: 1 << 20, AcceptBacklog: 8})
		go io.Copy(io.Discard, peer)
		peer.Write(b)
		peer.Close()
		<-s.Done()
		if s.Err() == nil || s.Err().Error() == "" {
			t.Fatalf("the session ended with %v", s.Err())
		}
		s.Close()
	})
}
