package tunnel

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/wire"
)

// serveSink accepts streams on the connector's session: each one is
// accepted, read to its end, answered with the count of bytes it carried
// and closed. It returns when the session ends.
func serveSink(s *Session) *sync.WaitGroup {
	return serveStreams(s, func(st *Stream) {
		if _, err := st.ReadHeader(5 * time.Second); err != nil {
			return
		}
		st.Reply(wire.StreamReply{Code: wire.CodeOK})
		n, _ := io.Copy(io.Discard, st)
		st.Write(binary.BigEndian.AppendUint64(nil, uint64(n)))
		st.CloseWrite()
	})
}

// serveStreams runs handle on each stream s accepts, in a goroutine of its
// own, and closes the stream after it. The returned group is done when the
// session has ended and every handler has returned.
func serveStreams(s *Session, handle func(*Stream)) *sync.WaitGroup {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			st, err := s.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer st.Close()
				handle(st)
			}()
		}
	}()
	return &wg
}

// BenchmarkStreamThroughput measures bytes from the edge to the connector
// over TLS 1.3 on loopback, on one stream and spread over eight.
func BenchmarkStreamThroughput(b *testing.B) { benchThroughput(b, tlsPair) }

// BenchmarkStreamThroughputWebSocket is BenchmarkStreamThroughput with
// the tunnel's TLS inside a WebSocket on an HTTPS server, as the
// wss:// transport runs it (package wstunnel).
func BenchmarkStreamThroughputWebSocket(b *testing.B) { benchThroughput(b, wsPair) }

func benchThroughput(b *testing.B, pair func(testing.TB) (net.Conn, net.Conn)) {
	const chunk = 64 << 10
	for _, streams := range []int{1, 8} {
		b.Run(fmt.Sprintf("streams=%d", streams), func(b *testing.B) {
			connector, edge := sessions(b, pair, Config{})
			sink := serveSink(connector)
			buf := make([]byte, chunk)
			b.SetBytes(chunk)
			b.ResetTimer()
			var wg sync.WaitGroup
			for i := range streams {
				n := b.N / streams
				if i < b.N%streams {
					n++
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					st, err := edge.Open(wire.StreamOpen{Service: "sink", Client: "bench:1"})
					if err != nil {
						b.Error(err)
						return
					}
					defer st.Close()
					for range n {
						if _, err := st.Write(buf); err != nil {
							b.Error(err)
							return
						}
					}
					st.CloseWrite()
					var got [8]byte
					if _, err := io.ReadFull(st, got[:]); err != nil || binary.BigEndian.Uint64(got[:]) != uint64(n*chunk) {
						b.Errorf("the connector counted %d bytes (%v), want %d", binary.BigEndian.Uint64(got[:]), err, n*chunk)
					}
					io.Copy(io.Discard, st)
				}()
			}
			wg.Wait()
			b.StopTimer()
			edge.Close()
			connector.Close()
			sink.Wait()
		})
	}
}

// BenchmarkStreamOpen measures one stream's life with no payload: open,
// header, reply, half-closes both ways and close, over TLS 1.3 on loopback.
func BenchmarkStreamOpen(b *testing.B) {
	connector, edge := sessions(b, tlsPair, Config{})
	sink := serveSink(connector)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		st, err := edge.Open(wire.StreamOpen{Service: "sink", Client: "bench:1"})
		if err != nil {
			b.Fatal(err)
		}
		st.CloseWrite()
		if n, err := io.Copy(io.Discard, st); err != nil || n != 8 {
			b.Fatalf("read %d bytes, %v; want the 8-byte count", n, err)
		}
		st.Close()
	}
	b.StopTimer()
	edge.Close()
	connector.Close()
	sink.Wait()
}
