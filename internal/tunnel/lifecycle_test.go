package tunnel

import (
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
// started (their own, their batch writers' and their multiplexers') and
// that are still at work. A multiplexer's receive or send goroutine that
// has left its loop is not at work any more: it is returning from the
// multiplexer's Close, which the session's Close has waited for.
func sessionGoroutines() []string {
	const tunnel = "github.com/sallyport/sallyport/internal/tunnel."
	var at []string
	for _, g := range goroutineStacks() {
		fn := entry(g)
		switch {
		case strings.HasPrefix(fn, tunnel+"(*Session)."),
			strings.HasPrefix(fn, tunnel+"newSession"),
			strings.HasPrefix(fn, tunnel+"(*batchWriter)."),
			strings.HasPrefix(fn, tunnel+"Preambles"):
		case strings.HasPrefix(fn, "github.com/hashicorp/yamux."):
			if (strings.HasPrefix(fn, "github.com/hashicorp/yamux.(*Session).recv(") || strings.HasPrefix(fn, "github.com/hashicorp/yamux.(*Session).send(")) &&
				!strings.Contains(g, "yamux.(*Session).recvLoop") && !strings.Contains(g, "yamux.(*Session).sendLoop") {
				continue
			}
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
// on a busy session: pings and buffer sweeps every few milliseconds,
// readers blocked on a stream, and a reset stream whose peer is still
// sending (so a goroutine of the resetting side waits for the peer's end).
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
			eventually(t, 5*time.Second, func() bool {
				edge.mu.Lock()
				defer edge.mu.Unlock()
				return len(edge.resetting) == 1
			}, "the edge waits for the connector's end of the stream it reset")
			// Each session's control reader, keepalive, pinger and
			// watcher, the edge's reset finisher, two flushers and two
			// pairs of multiplexer loops, once running: the check below
			// sees what it looks for.
			eventually(t, 5*time.Second, func() bool { return len(sessionGoroutines()) >= 15 }, "the sessions' 15 goroutines run")
			edge.Close()
			connector.Close()
			if left := sessionGoroutines(); len(left) > 0 {
				t.Fatalf("after Close, %d goroutines the sessions started still run:\n\n%s", len(left), strings.Join(left, "\n\n"))
			}
		})
	}
}
