package testnet

import (
	"crypto/sha256"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Backend is a real TCP back-end on loopback, run by the test. Its
// methods are safe for concurrent use.
type Backend struct {
	l        net.Listener
	accepted atomic.Int64
	wg       sync.WaitGroup

	// mu guards conns, the connections open now.
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

// Addr is the back-end's address.
func (b *Backend) Addr() string { return b.l.Addr().String() }

// Accepted is how many connections the back-end has accepted.
func (b *Backend) Accepted() int64 { return b.accepted.Load() }

// Open is how many of its connections are open now: accepted, and not
// yet closed by its handler's end.
func (b *Backend) Open() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.conns)
}

// WaitOpen waits until exactly n connections are open, or fails the test
// after timeout.
func (b *Backend) WaitOpen(t testing.TB, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for b.Open() != n {
		if time.Now().After(deadline) {
			t.Fatalf("back-end: %d connections open after %s, want %d", b.Open(), timeout, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Serve starts a back-end that runs handle for each connection; the
// connection is closed when handle returns. It stops when the test ends:
// listener and connections closed, handlers waited for.
func Serve(t testing.TB, handle func(*net.TCPConn)) *Backend {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &Backend{l: l, conns: map[net.Conn]struct{}{}}
	b.wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			b.accepted.Add(1)
			b.mu.Lock()
			b.conns[c] = struct{}{}
			b.mu.Unlock()
			b.wg.Go(func() {
				defer func() {
					b.mu.Lock()
					delete(b.conns, c)
					b.mu.Unlock()
					c.Close()
				}()
				handle(c.(*net.TCPConn))
			})
		}
	})
	t.Cleanup(func() {
		l.Close()
		b.mu.Lock()
		for c := range b.conns {
			c.Close()
		}
		b.mu.Unlock()
		b.wg.Wait()
	})
	return b
}

// Echo starts a back-end that echoes every byte and carries the client's
// half-close back: once the client stops sending, it does too.
func Echo(t testing.TB) *Backend {
	return Serve(t, func(c *net.TCPConn) {
		io.Copy(c, c)
		c.CloseWrite()
	})
}

// Digest starts a back-end that reads until the client half-closes and
// only then answers with the SHA-256 of what it read followed by reply:
// it only answers at all if the half-close arrived.
func Digest(t testing.TB, reply []byte) *Backend {
	return Serve(t, func(c *net.TCPConn) {
		h := sha256.New()
		if _, err := io.Copy(h, c); err != nil {
			return
		}
		c.Write(h.Sum(nil))
		c.Write(reply)
	})
}

// Refusing returns an address on which nothing listens.
func Refusing(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}
