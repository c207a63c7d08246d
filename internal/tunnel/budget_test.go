package tunnel

import (
	"bytes"
	"fmt"
	"io"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/wire"
)

// pattern is the block the connector repeats in a download.
var pattern = randomBytes(1<<20, 11)

// serveDownloads answers the streams the edge opens on connector: a
// stream for service "download:N" carries N bytes of the pattern to the
// edge and ends; "endless" carries the pattern until the stream fails.
func serveDownloads(connector *Session) *sync.WaitGroup {
	return serveStreams(connector, func(st *Stream) {
		h, err := st.ReadHeader(5 * time.Second)
		if err != nil || st.Reply(wire.StreamReply{Code: wire.CodeOK}) != nil {
			return
		}
		left := int64(-1)
		fmt.Sscanf(h.Service, "download:%d", &left)
		for left != 0 {
			b := pattern
			if left > 0 {
				b = b[:min(int64(len(b)), left)]
				left -= int64(len(b))
			}
			if _, err := st.Write(b); err != nil {
				return
			}
		}
		st.CloseWrite()
	})
}

// download opens a stream on edge, reads size bytes of the pattern from
// it to the end, and returns how long that took.
func download(t *testing.T, edge *Session, size int) time.Duration {
	t.Helper()
	start := time.Now()
	st, err := edge.Open(wire.StreamOpen{Service: fmt.Sprintf("download:%d", size), Client: "192.0.2.9:1"})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	st.SetReadDeadline(time.Now().Add(time.Minute))
	buf := make([]byte, len(pattern))
	for got := 0; got < size; {
		n, err := io.ReadFull(st, buf[:min(len(buf), size-got)])
		if err != nil || !bytes.Equal(buf[:n], pattern[:n]) {
			t.Fatalf("download: %d of %d bytes, then %v (bytes intact: %v)", got+n, size, err, bytes.Equal(buf[:n], pattern[:n]))
		}
		got += n
	}
	if n, err := st.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("after the download: %d bytes, %v; want EOF", n, err)
	}
	return time.Since(start)
}

// heapNow is the heap in use after two collections (the second empties
// the sync.Pools the multiplexer keeps its buffers in).
func heapNow() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse)
}

// Two hundred clients that stop reading their downloads cannot make the
// edge hold more than the tunnel's receive budget plus each stream's
// initial window, and another client's download through the same tunnel
// still runs: no head-of-line freeze. Its speed is compared with the same
// download through an idle tunnel in the same test.
func TestStalledStreamsStayWithinBudget(t *testing.T) {
	const stalled, size = 200, 64 << 20
	cfg := Config{ReceiveBudget: 16 << 20}

	idleConnector, idleEdge := sessions(t, tlsPair, cfg)
	idleServe := serveDownloads(idleConnector)
	alone := download(t, idleEdge, size)
	idleEdge.Close()
	idleConnector.Close()
	idleServe.Wait()

	var serving *sync.WaitGroup
	t.Cleanup(func() { serving.Wait() }) // after the sessions' cleanup
	connector, edge := sessions(t, tlsPair, cfg)
	serving = serveDownloads(connector)
	base := heapNow()
	waits := windowWaits()
	for i := range stalled {
		st, err := edge.Open(wire.StreamOpen{Service: "endless", Client: fmt.Sprintf("192.0.2.1:%d", i+1)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		// The client reads the start at full speed, so that its window
		// may grow, then stops.
		st.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(st, make([]byte, 1<<20)); err != nil {
			t.Fatalf("stalled stream %d: %v", i, err)
		}
	}
	eventually(t, 20*time.Second, func() bool { return windowWaits() >= waits+stalled }, "every stalled stream's sender waits for its window")
	settled(t, connector, edge)
	held := heapNow() - base
	grown := edge.mux.Reserved()
	bound := cfg.ReceiveBudget + stalled*InitialWindow
	t.Logf("%d stalled streams: the edge holds %.1f MiB more heap; windows grown by %.1f MiB (budget %d MiB); bound %.1f MiB",
		stalled, mib(held), mib(grown), cfg.ReceiveBudget>>20, mib(bound))
	if grown > cfg.ReceiveBudget {
		t.Errorf("reserved: grown %d; want at most the budget", grown)
	}
	// Slack for what the streams themselves are (a few KB each), and for
	// the last receive chunk of each stalled stream, which its bytes fill
	// only in part (the multiplexer buffers in 16 KiB chunks).
	slack := int64(4<<20 + stalled*16<<10)
	if held > bound+slack {
		t.Errorf("the stalled streams hold %.1f MiB at the edge, more than the budget and the initial windows (%.1f MiB)", mib(held), mib(bound))
	}

	beside := download(t, edge, size)
	t.Logf("%d MiB beside %d stalled streams in %s; alone through an idle tunnel in %s", size>>20, stalled, beside.Round(time.Millisecond), alone.Round(time.Millisecond))
	if beside > 3*alone {
		t.Errorf("the download beside stalled streams took %s, more than three times as long as alone (%s)", beside, alone)
	}
	if held := heapNow() - base; held > bound+slack {
		t.Errorf("after the download, the edge holds %.1f MiB more heap, over the bound %.1f MiB", mib(held), mib(bound))
	}
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }
