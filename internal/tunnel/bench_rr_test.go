package tunnel

import (
	"io"
	"syscall"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/wire"
)

// BenchmarkRequestResponse measures small exchanges on one kept-alive
// stream: a 100-byte request from the edge, a 100-byte answer from the
// connector, one round trip each, over TLS 1.3 on loopback.
func BenchmarkRequestResponse(b *testing.B) {
	const size = 100
	connector, edge := sessions(b, tlsPair, Config{})
	echo := serveStreams(connector, func(st *Stream) {
		if _, err := st.ReadHeader(5e9); err != nil {
			return
		}
		st.Reply(wire.StreamReply{Code: wire.CodeOK})
		buf := make([]byte, size)
		for {
			if _, err := io.ReadFull(st, buf); err != nil {
				return
			}
			if _, err := st.Write(buf); err != nil {
				return
			}
		}
	})
	st, err := edge.Open(wire.StreamOpen{Service: "echo", Client: "bench:1"})
	if err != nil {
		b.Fatal(err)
	}
	req, got := make([]byte, size), make([]byte, size)
	b.ReportAllocs()
	b.ResetTimer()
	defer reportCPU(b, cpuTime(), "cpu-µs/op", 1e3)
	for range b.N {
		if _, err := st.Write(req); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(st, got); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	st.Close()
	edge.Close()
	connector.Close()
	echo.Wait()
}

// BenchmarkOneStreamCPU measures one stream's bulk transfer from the edge
// to the connector, and the CPU time (user and system, both ends) per MB.
func BenchmarkOneStreamCPU(b *testing.B) {
	const chunk = 64 << 10
	connector, edge := sessions(b, tlsPair, Config{})
	sink := serveSink(connector)
	buf := make([]byte, chunk)
	b.SetBytes(chunk)
	st, err := edge.Open(wire.StreamOpen{Service: "sink", Client: "bench:1"})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	start := cpuTime()
	for range b.N {
		if _, err := st.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	st.CloseWrite()
	io.Copy(io.Discard, st)
	reportCPU(b, start, "cpu-ms/GB", float64(b.N)*chunk/1e9*1e6)
	b.StopTimer()
	st.Close()
	edge.Close()
	connector.Close()
	sink.Wait()
}

// cpuTime is the process's CPU time so far, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU reports the CPU time since start, in nanoseconds divided by
// per (per op: b.N, scaled by the caller).
func reportCPU(b *testing.B, start time.Duration, unit string, per float64) {
	if unit == "cpu-µs/op" {
		per = float64(b.N) * per
	}
	b.ReportMetric(float64(cpuTime()-start)/per, unit)
}
