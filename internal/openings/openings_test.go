package openings

import (
	"net"
	"testing"
)

// An opening shed at a bound is told so when its first message has come
// (Done reports false), so that the edge does not act on it: an
// enrollment would use up its token while the connector, its connection
// closed, never learns its certificate, and its retry is refused as a
// used token. One that finished first can no longer be shed.
func TestShedOpeningIsNotActedOn(t *testing.T) {
	o := New(10, 1)
	a, b, c := conns(t), conns(t), conns(t)
	o.Admit(a)
	if shed := o.Admit(b); shed != a {
		t.Fatalf("Admit(b) shed %v; want a, the older of one source at its bound", shed)
	}
	if o.Done(a) {
		t.Fatal("Done(a) after a was shed reported it still in its opening")
	}
	if !o.Done(b) {
		t.Fatal("Done(b) reported b shed; nothing shed it")
	}
	if shed := o.Admit(c); shed != nil {
		t.Fatalf("Admit(c) shed %v after b's opening was over; want none", shed)
	}
}

// conns returns one end of a loopback TCP connection, closed when the
// test ends.
func conns(t *testing.T) net.Conn {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return s
}
