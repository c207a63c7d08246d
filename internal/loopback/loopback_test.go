package loopback_test

import (
	"io"
	"net"
	"testing"

	"github.com/sallyport/sallyport/internal/loopback"
)

// The two ends are one TCP connection: bytes and a half-close cross it.
func TestPairIsOneConnection(t *testing.T) {
	c, s := loopback.Pair(t)
	if c.LocalAddr().String() != s.RemoteAddr().String() {
		t.Fatalf("client %s, but the server's peer is %s", c.LocalAddr(), s.RemoteAddr())
	}
	c.Write([]byte("hello"))
	c.CloseWrite()
	got, err := io.ReadAll(s)
	if string(got) != "hello" || err != nil {
		t.Errorf("server read %q, %v; want hello and a clean end", got, err)
	}
}

// A dial that fails (nothing listens at the address) is an error, and
// the pending Accept does not stay behind.
func TestDialAddrFailure(t *testing.T) {
	l := loopback.Listen(t)
	dead := loopback.Listen(t)
	addr := dead.Addr().String()
	dead.Close()
	if _, _, err := loopback.DialAddr(l, addr); err == nil {
		t.Fatal("dialing a closed port succeeded")
	}
}

// A relay carries bytes and half-closes both ways, and a thawed relay
// serves new connections. (That a frozen one forwards nothing is shown
// where it matters: testnet's dead-tunnel test, whose connector must
// declare the frozen tunnel dead.)
func TestRelay(t *testing.T) {
	l := loopback.Listen(t)
	r := loopback.StartRelay(t, l.Addr().String())
	roundTrip := func() (client, server *net.TCPConn) {
		t.Helper()
		c, s, err := loopback.DialAddr(l, r.Addr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(); s.Close() })
		c.Write([]byte("ping"))
		buf := make([]byte, 4)
		if _, err := io.ReadFull(s, buf); err != nil || string(buf) != "ping" {
			t.Fatalf("through the relay: %q, %v", buf, err)
		}
		return c, s
	}
	c, s := roundTrip()
	c.CloseWrite()
	if b, err := io.ReadAll(s); len(b) != 0 || err != nil {
		t.Errorf("after the client's half-close the server read %q, %v; want a clean end", b, err)
	}
	r.Freeze()
	r.Thaw()
	roundTrip()
}
