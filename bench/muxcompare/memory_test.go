package muxcompare

import (
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"testing"

	"github.com/sallyport/sallyport/internal/loopback"
)

// BenchmarkIdleStreamMemory measures the Go heap that one open, idle stream
// costs, both session ends together (they live in this process): it opens
// n streams, moves `moved` bytes each way on each so that lazily made
// buffers exist, and reports the HeapInuse growth after GC divided by n as
// B/stream, and the growth of live heap objects (HeapAlloc) the same way
// as live-B/stream; HeapInuse also counts the free room in the spans those
// objects sit in. The "tcp" and "tls" baselines open n separate loopback
// connection pairs instead; their kernel socket buffers and the runtime's
// poll descriptors are not Go heap and are not counted.
//
// A yamux stream keeps its receive buffer, as large as the most data it
// ever held unread, until Stream.Shrink is called; the "swept" cases call it
// on every stream before measuring, as a periodic idle sweep in the tunnel
// would. (Shrinking after every read instead halves bulk throughput.)
//
// Each iteration is a full measurement: run it with -benchtime=1x.
func BenchmarkIdleStreamMemory(b *testing.B) {
	cases := []struct {
		transport string
		n         int
		moved     int
		swept     bool
	}{
		{"yamux", 10000, 1, false},
		{"smux", 10000, 1, false},
		{"tcp", 4000, 1, false},
		{"tls", 2000, 1, false},
		{"yamux", 1000, 64 << 10, false},
		{"yamux", 1000, 64 << 10, true},
		{"smux", 1000, 64 << 10, false},
	}
	for _, tc := range cases {
		name := fmt.Sprintf("moved=%d/%s", tc.moved, tc.transport)
		if tc.swept {
			name += "-swept"
		}
		b.Run(name, func(b *testing.B) {
			var m streamMemory
			for range b.N {
				m = idleMemory(b, tc.transport, tc.n, tc.moved, tc.swept)
			}
			b.ReportMetric(m.inuse, "B/stream")
			b.ReportMetric(m.live, "live-B/stream")
			b.ReportMetric(m.goroutines, "goroutines/stream")
		})
	}
}

// streamMemory is what one open stream (or connection pair) costs.
type streamMemory struct {
	inuse      float64 // HeapInuse growth, bytes
	live       float64 // HeapAlloc growth, bytes
	goroutines float64
}

// idleMemory opens n pairs over transport, moves `moved` bytes each way on
// each, shrinks yamux streams' buffers if swept, and returns the growth per
// pair.
func idleMemory(b *testing.B, transport string, n, moved int, swept bool) streamMemory {
	b.Helper()
	clients := make([]net.Conn, n)
	servers := make([]net.Conn, n)
	var open func(i int) (c, s net.Conn, err error)
	switch transport {
	case "tcp", "tls":
		serverCfg, clientCfg := newTLSConfigs(b)
		ln := loopback.Listen(b)
		open = func(int) (net.Conn, net.Conn, error) {
			c, s, err := loopback.Dial(ln)
			if err != nil {
				return nil, nil, err
			}
			if transport == "tcp" {
				return c, s, nil
			}
			return handshakePair(c, s, serverCfg, clientCfg)
		}
	default:
		var lib muxLib
		for _, l := range benchLibs() {
			if l.name == transport {
				lib = l
			}
		}
		client, server := sessionPair(b, lib)
		// A stream pair per call; the accepts come in the order of opens
		// only if opens are serialised, so pair them under a lock.
		var mu sync.Mutex
		open = func(int) (net.Conn, net.Conn, error) {
			mu.Lock()
			defer mu.Unlock()
			c, err := client.OpenStream()
			if err != nil {
				return nil, nil, fmt.Errorf("open stream: %w", err)
			}
			if _, err := c.Write([]byte{0}); err != nil { // yamux sends its SYN with data
				return nil, nil, fmt.Errorf("write first byte: %w", err)
			}
			s, err := server.AcceptStream()
			if err != nil {
				return nil, nil, fmt.Errorf("accept stream: %w", err)
			}
			if _, err := io.ReadFull(s, make([]byte, 1)); err != nil {
				return nil, nil, fmt.Errorf("read first byte: %w", err)
			}
			return c, s, nil
		}
	}
	defer func() {
		for i := range clients {
			if clients[i] != nil {
				clients[i].Close()
				servers[i].Close()
			}
		}
	}()

	before := settledHeap()
	// Open and exercise the pairs with a few workers; none stays behind.
	const workers = 8
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			buf := make([]byte, max(moved, 1))
			for i := w; i < n; i += workers {
				c, s, err := open(i)
				if err != nil {
					errs <- err
					return
				}
				clients[i], servers[i] = c, s
				if err := exchange(c, s, buf); err != nil {
					errs <- fmt.Errorf("pair %d: %w", i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	if swept {
		for i := range clients {
			clients[i].(yamuxStream).Shrink()
			servers[i].(yamuxStream).Shrink()
		}
	}
	after := settledHeap()
	runtime.KeepAlive(clients)
	runtime.KeepAlive(servers)
	return streamMemory{
		inuse:      float64(int64(after.HeapInuse)-int64(before.HeapInuse)) / float64(n),
		live:       float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / float64(n),
		goroutines: float64(after.goroutines-before.goroutines) / float64(n),
	}
}

// exchange moves len(buf) bytes from c to s and back.
func exchange(c, s net.Conn, buf []byte) error {
	errc := make(chan error, 1)
	go func() {
		if _, err := io.ReadFull(s, buf); err != nil {
			errc <- fmt.Errorf("server read: %w", err)
			return
		}
		_, err := s.Write(buf)
		errc <- err
	}()
	if _, err := c.Write(make([]byte, len(buf))); err != nil {
		return fmt.Errorf("client write: %w", err)
	}
	if err := <-errc; err != nil {
		return err
	}
	if _, err := io.ReadFull(c, make([]byte, len(buf))); err != nil {
		return fmt.Errorf("client read: %w", err)
	}
	return nil
}

// heapState is the heap and goroutine count at one moment.
type heapState struct {
	HeapInuse, HeapAlloc uint64
	goroutines           int
}

// settledHeap collects garbage and returns the heap and goroutine count.
func settledHeap() heapState {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return heapState{HeapInuse: ms.HeapInuse, HeapAlloc: ms.HeapAlloc, goroutines: runtime.NumGoroutine()}
}
