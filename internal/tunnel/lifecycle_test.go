package tunnel

import (
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/wire"
)

// goroutineStacks returns the stack of every live goroutine.
func goroutineStacks() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return strings.Split(string(buf[:n]), "\n\n")
		}
		buf = make([]byte, 2*len(buf))
	}
}

// entry returns the function a goroutine's stack g started in, looking
// through a WaitGroup's Go.
func entry(g string) string {
	g, _, _ = strings.Cut(g, "\ncreated by ")
	fn := ""
	for _, line := range strings.Split(g, "\n")[1:] {
		if !strings.HasPrefix(line, "\t") && !strings.HasPrefix(line, "sync.(*WaitGroup).Go.func") {
			fn = line
		}
	}
	return fn
}

// sessionGoroutines returns the stacks of the goroutines that sessions
// started, their own and the multiplexer's.
func sessionGoroutines() []string {
	const tunnel = "github.com/sallyport/sallyport/internal/tunnel."
	const mux = "github.com/sallyport/sallyport/internal/mux."
	var at []string
	for _, g := range goroutineStacks() {
		fn := entry(g)
		switch {
		case strings.HasPrefix(fn, tunnel+"(*Session)."),
			strings.HasPrefix(fn, tunnel+"start"),
			strings.HasPrefix(fn, tunnel+"Preambles"),
			strings.HasPrefix(fn, mux+"(*Session)."),
			strings.HasPrefix(fn, mux+"New"):
		default:
			continue
		}
		at = append(at, g)
	}
	return at
}

// blockedIn counts the goroutines whose stack holds fn.
func blockedIn(fn string) int {
	n := 0
	for _, g := range goroutineStacks() {
		if strings.Contains(g, fn) {
			n++
		}
	}
	return n
}

// Close returns only once everything the session started has ended, even
// on a busy session: pings every few milliseconds, readers blocked on a
// stream, and a stream reset while its peer is still sending.
func TestCloseLeavesNothingRunning(t *testing.T) {
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			// The test's own goroutines end once the sessions are closed,
			// which the cleanups registered after this one do.
			var wg sync.WaitGroup
			t.Cleanup(wg.Wait)
			cfg := Config{KeepaliveInterval: 5 * time.Millisecond, KeepaliveTimeout: 10 * time.Second}
			connector, edge := sessions(t, tr.pair, cfg)
			es, cs := openPair(t, edge, connector, wire.StreamOpen{Service: "db", Client: "192.0.2.1:1"})
			rs, rc := openPair(t, edge, connector, wire.StreamOpen{Service: "db", Client: "192.0.2.1:2"})
			wg.Go(func() { io.Copy(io.Discard, es) })
			wg.Go(func() { io.Copy(io.Discard, cs) })
			wg.Go(func() {
				chunk := make([]byte, 32<<10)
				for {
					if _, err := rc.Write(chunk); err != nil {
						return
					}
				}
			})
			if _, err := io.ReadFull(rs, make([]byte, 64<<10)); err != nil {
				t.Fatal(err)
			}
			rs.Close()
			// Each session's keepalive, and its multiplexer's reader and
			// writer, once running: the check below sees what it looks
			// for.
			eventually(t, 5*time.Second, func() bool { return len(sessionGoroutines()) >= 6 }, "the sessions' 6 goroutines run")
			edge.Close()
			connector.Close()
			if left := sessionGoroutines(); len(left) > 0 {
				t.Fatalf("after Close, %d goroutines the sessions started still run:\n\n%s", len(left), strings.Join(left, "\n\n"))
			}
		})
	}
}

// windowWaits counts the writers blocked on a stream's send window (not
// on the session's send queue).
func windowWaits() int {
	n := 0
	for _, g := range goroutineStacks() {
		if strings.Contains(g, "internal/mux.(*Stream).Write(") && strings.Contains(g, "internal/mux.(*Stream).sleep(") {
			n++
		}
	}
	return n
}

// A thousand idle streams, each waiting to be told it is readable as a
// relay at rest waits, hold no goroutine on either side; each is told
// once its peer sends, and reads what was sent.
func TestIdleStreamsHoldNoGoroutine(t *testing.T) {
	const n = 1000
	connector, edge := sessions(t, tlsPair, Config{})
	accepted := make(chan *Stream, n)
	go func() {
		for range n {
			st, err := connector.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- st
		}
	}()
	runtime.GC()
	before, heapBefore := runtime.NumGoroutine(), heapNow()
	told := make(chan int, n)
	var es, cs []*Stream
	for i := range n {
		st, err := edge.Open(wire.StreamOpen{Service: "svc", Client: fmt.Sprintf("192.0.2.2:%d", i+1)})
		if err != nil {
			t.Fatal(err)
		}
		es = append(es, st)
		t.Cleanup(func() { st.Close() })
	}
	for range n {
		var st *Stream
		select {
		case st = <-accepted:
		case <-time.After(10 * time.Second):
			t.Fatal("streams not accepted within 10s")
		}
		if st == nil {
			t.Fatal("the session ended")
		}
		if _, err := st.ReadHeader(5 * time.Second); err != nil {
			t.Fatal(err)
		}
		st.Reply(wire.StreamReply{Code: wire.CodeOK})
		cs = append(cs, st)
		t.Cleanup(func() { st.Close() })
	}
	settled(t, connector, edge)
	for i, st := range es {
		if err := st.Accepted(); err != nil {
			t.Fatal(err)
		}
		st.NotifyRead(func() { told <- i })
	}
	select {
	case i := <-told:
		t.Fatalf("idle stream %d told it is readable", i)
	default:
	}
	goroutines, heap := runtime.NumGoroutine()-before, heapNow()-heapBefore
	t.Logf("%d idle streams: %+d goroutines, %.0f bytes of heap per stream (both ends)", n, goroutines, float64(heap)/n)
	if goroutines > 0 {
		t.Errorf("%d idle streams added %d goroutines; want none", n, goroutines)
	}
	for i := range n {
		if _, err := cs[i].Write([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	seen := make([]bool, n)
	for range n {
		select {
		case i := <-told:
			if seen[i] {
				t.Fatalf("stream %d told twice", i)
			}
			seen[i] = true
			b := make([]byte, 2)
			if k, wait, err := es[i].TryRead(b); k != 1 || wait || err != nil || b[0] != byte(i) {
				t.Fatalf("stream %d after it was told: %d bytes %x, wait %v, %v", i, k, b[:k], wait, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("not every stream told within 10s of its byte")
		}
	}
}

// AfterEnd tells an owner that the session is over without a goroutine
// of the owner's waiting on Done: f runs once, after the peer's close
// ended the session, when nothing else of the session runs; and at once
// when the session is over already.
func TestAfterEndRunsOnceWhenNothingElseRuns(t *testing.T) {
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			connector, edge := sessions(t, tr.pair, Config{})
			type report struct {
				done   bool
				others []string // the session goroutines other than f's that still wait
			}
			got := make(chan report, 2)
			called, peerClosed := make(chan struct{}), make(chan struct{})
			edge.AfterEnd(func() {
				close(called)
				ended := edge.IsClosed()
				// The edge may see the end while the connector's Close
				// is still under way: look once that has returned.
				<-peerClosed
				var others []string
				for _, g := range sessionGoroutines() {
					// A goroutine past its WaitGroup's Done may still be
					// on its way out (runnable): it waits for nothing.
					exiting := strings.Contains(g, " [runnable]:") || strings.Contains(g, " [running]:")
					if !exiting && !strings.Contains(g, "TestAfterEndRunsOnceWhenNothingElseRuns") {
						others = append(others, g)
					}
				}
				got <- report{done: ended, others: others}
			})
			select {
			case <-called:
				t.Fatal("f ran while the session was live")
			default:
			}
			connector.Close() // the peer goes: the edge's session ends by itself
			close(peerClosed)
			var r report
			select {
			case r = <-got:
			case <-time.After(10 * time.Second):
				t.Fatal("f not called within 10s of the peer's close")
			}
			if !r.done {
				t.Error("f ran before the session had ended")
			}
			if len(r.others) > 0 {
				t.Errorf("when f ran, %d other goroutines of the sessions still ran:\n\n%s", len(r.others), strings.Join(r.others, "\n\n"))
			}
			atOnce := false
			edge.AfterEnd(func() { atOnce = true })
			if !atOnce {
				t.Error("AfterEnd on an ended session did not call f before returning")
			}
			edge.Close()
			select {
			case <-got:
				t.Error("f was called a second time")
			default:
			}
		})
	}
}
