package tunnel

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	yamux "github.com/libp2p/go-yamux/v5"
)

// recordConn records every byte written through it.
type recordConn struct {
	net.Conn
	mu  sync.Mutex // guards out
	out []byte
}

func (c *recordConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	c.out = append(c.out, b...)
	c.mu.Unlock()
	return c.Conn.Write(b)
}

func (c *recordConn) written() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.out)
}

// muxPair runs a yamux client on a and a server on b, with keepalives off
// and the client accepting at most backlog streams the server opens. Both
// are closed when the test ends.
func muxPair(t testing.TB, a, b net.Conn, backlog int) (client, server *yamux.Session) {
	t.Helper()
	cfg := func(backlog int) *yamux.Config {
		c := yamux.DefaultConfig()
		c.EnableKeepAlive = false
		c.AcceptBacklog = backlog
		c.LogOutput = io.Discard
		return c
	}
	client, err := yamux.Client(a, cfg(backlog), nil)
	if err != nil {
		t.Fatal(err)
	}
	server, err = yamux.Server(b, cfg(256), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// muxTraffic runs a real yamux session and returns what its client wrote,
// with the streams that a reader of those bytes should find readable, in
// order. The client opens streams (not readable), sends data and a large
// body, gives credit back (not readable), pings (not readable), ends a
// stream (FIN), refuses a stream (RST) and sends data again. The streams
// take turns, so that a frame wrongly told, or missed, shows.
func muxTraffic(t testing.TB) (traffic []byte, readable []uint32) {
	t.Helper()
	a, b := net.Pipe()
	rec := &recordConn{Conn: a}
	client, server := muxPair(t, rec, b, 1)
	accepted := make(chan *yamux.Stream, 8)
	go func() {
		for {
			st, err := server.AcceptStream()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- st
			go io.Copy(io.Discard, st)
		}
	}()
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	open := func() *yamux.Stream {
		t.Helper()
		st, err := client.OpenStream(context.Background())
		must("open a stream", err)
		return st
	}

	// Streams opened first: an opening (SYN) makes nothing readable.
	s1, s2, s3 := open(), open(), open()
	_, err := s1.Write([]byte("hello"))
	must("write hello", err)
	_, err = s2.Write(make([]byte, 40000))
	must("write a large body", err)
	// The server sends more than half a window; the client reads it all
	// and gives the credit back: a window update that makes nothing
	// readable.
	ss1 := <-accepted
	go ss1.Write(make([]byte, 200<<10))
	s1.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = io.ReadFull(s1, make([]byte, 200<<10))
	must("read the server's bytes", err)
	_, err = client.Ping()
	must("ping", err)
	must("close a stream", s3.Close())
	// The client accepts one stream from the server, and refuses the next
	// with a reset.
	_, err = server.OpenStream(context.Background())
	must("open a server stream", err)
	refused, err := server.OpenStream(context.Background())
	must("open a second server stream", err)
	refused.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := refused.Read(make([]byte, 1)); !errors.Is(err, yamux.ErrStreamReset) {
		t.Fatalf("a stream beyond the client's backlog: read = %v, want a reset", err)
	}
	_, err = s1.Write([]byte("x"))
	must("write again", err)
	// go-yamux's Write returns once the frame is queued: wait for it to
	// be written.
	last := append(muxFrame(muxTypeData, 0, s1.StreamID(), 1), 'x')
	eventually(t, 5*time.Second, func() bool { return bytes.Contains(rec.written(), last) }, "the last frame is written")
	return rec.written(), []uint32{s1.StreamID(), s2.StreamID(), s3.StreamID(), refused.StreamID(), s1.StreamID()}
}

// tapAll feeds b to a fresh tap in pieces of the given sizes (cycled) and
// returns the streams it found readable, in order.
func tapAll(b []byte, pieces []int) []uint32 {
	var t frameTap
	var got []uint32
	for i := 0; len(b) > 0; i++ {
		n := len(b)
		if len(pieces) > 0 {
			n = min(n, max(1, pieces[i%len(pieces)]))
		}
		t.feed(b[:n])
		b = b[n:]
		got = append(got, t.done...)
		t.done = t.done[:0]
	}
	return got
}

// The tap finds the streams whose data, end or reset has come in, in the
// frames go-yamux itself writes, however the connection's reads split them.
func TestFrameTapFindsReadableStreams(t *testing.T) {
	traffic, want := muxTraffic(t)
	for _, pieces := range [][]int{nil, {1}, {5, 7, 11}, {12}, {13, 4096}} {
		if got := slices.Compact(tapAll(traffic, pieces)); !slices.Equal(got, want) {
			t.Errorf("read in pieces %v: readable %v, want %v", pieces, got, want)
		}
	}
	// The last frame, cut short, is not told.
	if got := slices.Compact(tapAll(traffic[:len(traffic)-1], nil)); !slices.Equal(got, want[:len(want)-1]) {
		t.Errorf("the last frame cut short: readable %v, want %v", got, want[:len(want)-1])
	}
}

// FuzzFrameTap: whatever the peer sends, and however it is split into
// reads, the tap does not panic and finds the same streams.
func FuzzFrameTap(f *testing.F) {
	traffic, _ := muxTraffic(f)
	f.Add(traffic, 3)
	f.Add(traffic[:len(traffic)/2], 1)
	f.Add([]byte("not a frame at all, just bytes"), 7)
	f.Fuzz(func(t *testing.T, b []byte, piece int) {
		// A stream told twice in a row is told once, or twice if the
		// frames came in two reads: either is right.
		whole := slices.Compact(tapAll(b, nil))
		if split := slices.Compact(tapAll(b, []int{piece % 97, piece % 13, 1})); !slices.Equal(whole, split) {
			t.Fatalf("read whole: %v; read in pieces: %v", whole, split)
		}
	})
}
