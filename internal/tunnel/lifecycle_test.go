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
// started, their own and (if mux) the multiplexer's, that are still at
// work. A multiplexer's receive or send goroutine that has left its loop
// is not at work any more: it is returning from the multiplexer's Close,
// which the session's Close has waited for.
func sessionGoroutines(mux bool) []string {
	const tunnel = "github.com/sallyport/sallyport/internal/tunnel."
	const yamux = "github.com/libp2p/go-yamux/v5."
	var at []string
	for _, g := range goroutineStacks() {
		fn := entry(g)
		switch {
		case strings.HasPrefix(fn, tunnel+"(*Session)."),
			strings.HasPrefix(fn, tunnel+"start"),
			strings.HasPrefix(fn, tunnel+"Preambles"):
		case mux && strings.HasPrefix(fn, yamux):
			if (strings.HasPrefix(fn, yamux+"(*Session).recv(") || strings.HasPrefix(fn, yamux+"(*Session).send(")) &&
				!strings.Contains(g, "go-yamux/v5.(*Session).recvLoop") && !strings.Contains(g, "go-yamux/v5.(*Session).sendLoop") {
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
// on a busy session: pings every few milliseconds, readers blocked on a
// stream, and a stream reset while its peer is still sending. go-yamux's
// round-trip probe is not waited for (see Session.Close): it ends at once
// on its own.
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
			// Each session's keepalive, pinger and watcher, and its
			// multiplexer's receive, send and probe loops, once running:
			// the check below sees what it looks for.
			eventually(t, 5*time.Second, func() bool { return len(sessionGoroutines(true)) >= 12 }, "the sessions' 12 goroutines run")
			edge.Close()
			connector.Close()
			if left := sessionGoroutines(false); len(left) > 0 {
				t.Fatalf("after Close, %d goroutines the sessions started still run:\n\n%s", len(left), strings.Join(left, "\n\n"))
			}
			eventually(t, time.Second, func() bool { return len(sessionGoroutines(true)) == 0 }, "the multiplexers' goroutines end")
		})
	}
}
