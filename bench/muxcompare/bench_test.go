package muxcompare

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"

	"github.com/sallyport/sallyport/internal/loopback"
)

// writeSize is the size of one write in the throughput benchmarks, the
// size of the tunnel's copy buffer.
const writeSize = 64 << 10

// rtSize is the size of a request and of its reply in the round-trip
// benchmarks.
const rtSize = 100

// connPairs returns n connected pairs over one transport: "tcp" and "tls"
// use n separate loopback connections; a mux library uses n streams of one
// session over one loopback TLS 1.3 connection. The test's cleanup closes
// everything.
func connPairs(b *testing.B, transport string, n int) (clients, servers []net.Conn) {
	b.Helper()
	var client, server muxSession
	for _, lib := range benchLibs() {
		if lib.name == transport {
			client, server = sessionPair(b, lib)
		}
	}
	for range n {
		var c, s net.Conn
		switch transport {
		case "tcp":
			c, s = loopback.Pair(b)
		case "tls":
			c, s = tlsPair(b)
		default:
			if client == nil {
				b.Fatalf("unknown transport %q", transport)
			}
			cs, ss, err := streamPair(client, server)
			if err != nil {
				b.Fatal(err)
			}
			c, s = cs, ss
		}
		clients = append(clients, c)
		servers = append(servers, s)
	}
	return clients, servers
}

// BenchmarkThroughput measures one-way bulk transfer in 64 KiB writes over
// 1 and 8 concurrent streams; MB/s is the aggregate.
func BenchmarkThroughput(b *testing.B) {
	for _, streams := range []int{1, 8} {
		for _, transport := range []string{"tcp", "tls", "yamux", "yamux+coalesce", "smux"} {
			b.Run(fmt.Sprintf("streams=%d/%s", streams, transport), func(b *testing.B) {
				clients, servers := connPairs(b, transport, streams)
				b.SetBytes(writeSize)
				b.ReportAllocs()
				b.ResetTimer()
				var wg sync.WaitGroup
				errs := make(chan error, 2*streams)
				for i := range streams {
					writes := b.N / streams
					if i < b.N%streams {
						writes++
					}
					wg.Go(func() {
						buf := make([]byte, writeSize)
						for range writes {
							if _, err := clients[i].Write(buf); err != nil {
								errs <- fmt.Errorf("write: %w", err)
								return
							}
						}
					})
					wg.Go(func() {
						if err := readN(servers[i], int64(writes)*writeSize, make([]byte, writeSize)); err != nil {
							errs <- err
						}
					})
				}
				wg.Wait()
				b.StopTimer()
				close(errs)
				for err := range errs {
					b.Fatal(err)
				}
			})
		}
	}
}

// BenchmarkRoundTrip measures a 100-byte request and a 100-byte reply on
// one established stream (or connection); ns/op is one round trip.
func BenchmarkRoundTrip(b *testing.B) {
	for _, transport := range []string{"tcp", "tls", "yamux", "yamux+coalesce", "smux"} {
		b.Run(transport, func(b *testing.B) {
			clients, servers := connPairs(b, transport, 1)
			c, s := clients[0], servers[0]
			var wg sync.WaitGroup
			defer wg.Wait()
			echoErr := make(chan error, 1)
			wg.Go(func() { echoErr <- echo(s, b.N) })
			req, reply := make([]byte, rtSize), make([]byte, rtSize)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if _, err := c.Write(req); err != nil {
					b.Fatalf("write request: %v", err)
				}
				if _, err := io.ReadFull(c, reply); err != nil {
					b.Fatalf("read reply: %v", err)
				}
			}
			b.StopTimer()
			if err := <-echoErr; err != nil {
				b.Fatal(err)
			}
		})
	}
}

// echo answers n requests of rtSize bytes on c with as many bytes.
func echo(c net.Conn, n int) error {
	buf := make([]byte, rtSize)
	for range n {
		if _, err := io.ReadFull(c, buf); err != nil {
			return fmt.Errorf("echo: read request: %w", err)
		}
		if _, err := c.Write(buf); err != nil {
			return fmt.Errorf("echo: write reply: %w", err)
		}
	}
	return nil
}

// BenchmarkOpenRoundTripClose measures what one short client connection
// costs the tunnel: open a stream, one 100-byte round trip, close. The
// "tcp-dial" and "tls-dial" baselines do the same with a new loopback
// connection (and a full TLS 1.3 handshake) each time. allocs/op counts
// both ends, which live in this process.
func BenchmarkOpenRoundTripClose(b *testing.B) {
	for _, lib := range benchLibs() {
		b.Run(lib.name, func(b *testing.B) {
			client, server := sessionPair(b, lib)
			var wg sync.WaitGroup
			defer wg.Wait()
			defer server.Close() // ends the accept loop
			wg.Go(func() {
				for {
					s, err := server.AcceptStream()
					if err != nil {
						return
					}
					wg.Go(func() { serveOnce(s) })
				}
			})
			req, reply := make([]byte, rtSize), make([]byte, rtSize)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				c, err := client.OpenStream()
				if err != nil {
					b.Fatalf("open stream: %v", err)
				}
				if err := roundTrip(c, req, reply); err != nil {
					b.Fatal(err)
				}
				if err := c.Close(); err != nil {
					b.Fatalf("close stream: %v", err)
				}
			}
			b.StopTimer()
		})
	}
	for _, withTLS := range []bool{false, true} {
		name := "tcp-dial"
		if withTLS {
			name = "tls-dial"
		}
		b.Run(name, func(b *testing.B) {
			serverCfg, clientCfg := newTLSConfigs(b)
			ln := loopback.Listen(b)
			var wg sync.WaitGroup
			defer wg.Wait()
			defer ln.Close()
			wg.Go(func() {
				for {
					s, err := ln.Accept()
					if err != nil {
						return
					}
					if withTLS {
						s = tls.Server(s, serverCfg)
					}
					wg.Go(func() { serveOnce(s) })
				}
			})
			req, reply := make([]byte, rtSize), make([]byte, rtSize)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				raw, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					b.Fatalf("dial: %v", err)
				}
				// Reset on close: no TIME_WAIT pile-up over many runs.
				if err := raw.(*net.TCPConn).SetLinger(0); err != nil {
					b.Fatalf("set linger: %v", err)
				}
				c := raw
				if withTLS {
					c = tls.Client(raw, clientCfg)
				}
				if err := roundTrip(c, req, reply); err != nil {
					b.Fatal(err)
				}
				c.Close()
			}
			b.StopTimer()
		})
	}
}

// roundTrip writes req to c and reads a reply of len(reply) bytes.
func roundTrip(c net.Conn, req, reply []byte) error {
	if _, err := c.Write(req); err != nil {
		return fmt.Errorf("write request: %w", err)
	}
	if _, err := io.ReadFull(c, reply); err != nil {
		return fmt.Errorf("read reply: %w", err)
	}
	return nil
}

// serveOnce answers one request on c, then waits for the client to finish
// and closes c. It owns c.
func serveOnce(c net.Conn) {
	defer c.Close()
	buf := make([]byte, rtSize)
	if _, err := io.ReadFull(c, buf); err != nil {
		return
	}
	if _, err := c.Write(buf); err != nil {
		return
	}
	// Until EOF or any other end.
	_, _ = io.Copy(io.Discard, c)
}
