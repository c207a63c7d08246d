// Package loopback makes real TCP connections on 127.0.0.1 for tests and
// benchmarks that want the kernel's TCP (half-close, resets, buffers)
// rather than net.Pipe: both ends of a connection, and a relay that can
// freeze like a dead link.
//
//	client, server := loopback.Pair(t)
//	r := loopback.StartRelay(t, edgeTunnelAddr) // the connector dials r.Addr()
//	r.Freeze()                                  // the link dies silently
package loopback

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"
)

// Listen opens a TCP listener on 127.0.0.1 that t's cleanup closes.
func Listen(t testing.TB) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen on loopback: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// Dial connects to l and accepts the connection: it returns both ends of
// one TCP connection, which the caller owns and closes. l is a TCP
// listener (as net.Listen("tcp", ...) returns) with no other caller of
// Accept.
func Dial(l net.Listener) (client, server *net.TCPConn, err error) {
	return DialAddr(l, l.Addr().String())
}

// DialAddr is Dial to addr, which must lead to l (a relay in front of
// it, say): server is the end that l accepts.
func DialAddr(l net.Listener, addr string) (client, server *net.TCPConn, err error) {
	type accepted struct {
		c   net.Conn
		err error
	}
	ch := make(chan accepted, 1)
	go func() {
		c, err := l.Accept()
		ch <- accepted{c, err}
	}()
	c, err := net.Dial("tcp", addr)
	if d, ok := l.(interface{ SetDeadline(time.Time) error }); ok && err != nil {
		// Nothing will connect: end the Accept, and leave l as it was.
		d.SetDeadline(time.Now())
		defer d.SetDeadline(time.Time{})
	}
	a := <-ch
	if err != nil || a.err != nil {
		if c != nil {
			c.Close()
		}
		if a.c != nil {
			a.c.Close()
		}
		return nil, nil, fmt.Errorf("connect a loopback pair: %w", errors.Join(err, a.err))
	}
	return c.(*net.TCPConn), a.c.(*net.TCPConn), nil
}

// Pair returns both ends of one new TCP connection on 127.0.0.1; t's
// cleanup closes them.
func Pair(t testing.TB) (client, server *net.TCPConn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen on loopback: %v", err)
	}
	defer l.Close()
	c, s, err := Dial(l)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c, s
}

// FreeAddr returns a loopback address whose port was free a moment ago:
// listen on port 0, note the port, close. For a server that must be told
// its port before it starts (a cluster member whose peers route to it);
// another process may take the port in between, rarely.
func FreeAddr(t testing.TB) string {
	t.Helper()
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		// The kernel may hand a closed port out again at once: a test
		// that asks for two free addresses must get two.
		if _, dup := handedOut.LoadOrStore(addr, true); !dup {
			return addr
		}
	}
}

// handedOut holds every address FreeAddr has returned in this process.
var handedOut sync.Map
