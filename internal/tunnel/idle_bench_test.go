package tunnel

import (
	"fmt"
	"io"
	"runtime"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/wire"
)

// BenchmarkIdleTunnels measures what an idle tunnel holds, per end: heap
// and goroutines, over 200 tunnels over TLS 1.3 on loopback, each of
// which has carried one stream's bytes (32 KiB, or 4 MiB) and is at rest. Run it once:
//
//	go test -run XXX -bench IdleTunnels -benchtime 1x ./internal/tunnel/
func BenchmarkIdleTunnels(b *testing.B) {
	for _, carried := range []int{32 << 10, 4 << 20} {
		b.Run(fmt.Sprintf("carried=%dKiB", carried>>10), func(b *testing.B) { benchIdle(b, carried) })
	}
}

// benchIdle runs 200 tunnels that have each carried one stream of size
// bytes, and reports what they hold at rest.
func benchIdle(b *testing.B, size int) {
	const n = 200
	cfg := Config{KeepaliveInterval: time.Hour, KeepaliveTimeout: 2 * time.Hour}
	for b.Loop() {
		before := heapNow()
		goroutines := runtime.NumGoroutine()
		for range n {
			connector, edge := sessions(b, tlsPair, cfg)
			es, cs := openPair(b, edge, connector, wire.StreamOpen{Service: "svc", Client: "192.0.2.1:1"})
			msg := make([]byte, size)
			werr := make(chan error, 1)
			go func() { _, err := es.Write(msg); werr <- err }()
			cs.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.ReadFull(cs, msg); err != nil {
				b.Fatal(err)
			}
			if err := <-werr; err != nil {
				b.Fatal(err)
			}
			es.Close()
			cs.Close()
		}
		after := heapNow()
		b.ReportMetric(float64(after-before)/(2*n), "heap-B/end")
		b.ReportMetric(float64(runtime.NumGoroutine()-goroutines)/(2*n), "goroutines/end")
	}
}
