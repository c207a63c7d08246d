package loopback_test

import (
	"io"
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
