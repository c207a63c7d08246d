package pipe_test

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sallyport/sallyport/internal/loopback"
	"github.com/sallyport/sallyport/internal/pipe"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// memPair returns the two ends of a net.Pipe, which has no CloseWrite.
func memPair(t testing.TB) (net.Conn, net.Conn) {
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// joined starts Join between two fresh connections and returns the outer
// ends: peerA talks to Join's a, peerB to Join's b. The Result arrives on
// the channel when Join returns.
func joined(t testing.TB, pair func(testing.TB) (net.Conn, net.Conn)) (peerA, peerB net.Conn, res <-chan pipe.Result) {
	t.Helper()
	peerA, a := pair(t)
	b, peerB := pair(t)
	ch := make(chan pipe.Result, 1)
	go func() { ch <- pipe.Join(a, b) }()
	return peerA, peerB, ch
}

func tcp(t testing.TB) (net.Conn, net.Conn) { c, s := loopback.Pair(t); return c, s }

func wait(t *testing.T, res <-chan pipe.Result) pipe.Result {
	t.Helper()
	select {
	case r := <-res:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("Join has not returned 10s after both directions ended")
		return pipe.Result{}
	}
}

func closeWrite(t *testing.T, c net.Conn) {
	t.Helper()
	if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Error(err)
	}
}

// Both peers send at once and half-close; each receives the other's bytes
// in full, and Result counts them.
func TestJoinCarriesBytesBothWays(t *testing.T) {
	peerA, peerB, res := joined(t, tcp)
	up, down := randomBytes(3<<20+17, 1), randomBytes(5<<20+3, 2)
	gotA, gotB := make(chan []byte, 1), make(chan []byte, 1)
	for _, p := range []struct {
		c    net.Conn
		send []byte
		got  chan []byte
	}{{peerA, up, gotA}, {peerB, down, gotB}} {
		p.c.SetDeadline(time.Now().Add(20 * time.Second))
		go func() {
			p.c.Write(p.send)
			p.c.(*net.TCPConn).CloseWrite()
		}()
		go func() { b, _ := io.ReadAll(p.c); p.got <- b }()
	}
	if b := <-gotB; !bytes.Equal(b, up) {
		t.Errorf("B received %d bytes, not the %d that A sent", len(b), len(up))
	}
	if b := <-gotA; !bytes.Equal(b, down) {
		t.Errorf("A received %d bytes, not the %d that B sent", len(b), len(down))
	}
	r := wait(t, res)
	if r.AToB != int64(len(up)) || r.BToA != int64(len(down)) || r.Err != nil {
		t.Fatalf("Result = %+v, want AToB %d, BToA %d, no error", r, len(up), len(down))
	}
}

// A sends a request and shuts down its sending side; B reads it all, sees
// EOF, and only then answers. The answer reaches A in full.
func TestJoinHalfCloseKeepsTheResponse(t *testing.T) {
	peerA, peerB, res := joined(t, tcp)
	peerA.SetDeadline(time.Now().Add(20 * time.Second))
	peerB.SetDeadline(time.Now().Add(20 * time.Second))
	request, response := randomBytes(100<<10, 3), randomBytes(2<<20, 4)

	go func() {
		peerA.Write(request)
		peerA.(*net.TCPConn).CloseWrite()
	}()
	got, err := io.ReadAll(peerB)
	if err != nil || !bytes.Equal(got, request) {
		t.Fatalf("B read %d bytes (%v), want the %d-byte request then EOF", len(got), err, len(request))
	}
	go func() {
		peerB.Write(response)
		closeWrite(t, peerB)
	}()
	got, err = io.ReadAll(peerA)
	if err != nil || !bytes.Equal(got, response) {
		t.Fatalf("A read %d bytes (%v) after its half-close, want the %d-byte response", len(got), err, len(response))
	}
	r := wait(t, res)
	if r.AToB != int64(len(request)) || r.BToA != int64(len(response)) || r.Err != nil {
		t.Fatalf("Result = %+v", r)
	}
}

// Over net.Pipe, which cannot half-close, Join carries request and
// response and then, when A hangs up, closes B instead.
func TestJoinWithoutCloseWrite(t *testing.T) {
	for _, tc := range []struct {
		name    string
		a, b    func(testing.TB) (net.Conn, net.Conn)
		halfA   bool // peerA can half-close
		request int
	}{
		{"pipe to pipe", memPair, memPair, false, 200 << 10},
		{"tcp to pipe", tcp, memPair, true, 200 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			peerA, a := tc.a(t)
			b, peerB := tc.b(t)
			res := make(chan pipe.Result, 1)
			go func() { res <- pipe.Join(a, b) }()
			peerA.SetDeadline(time.Now().Add(10 * time.Second))
			peerB.SetDeadline(time.Now().Add(10 * time.Second))
			request, response := randomBytes(tc.request, 5), randomBytes(300<<10, 6)

			go peerA.Write(request)
			got := make([]byte, len(request))
			if _, err := io.ReadFull(peerB, got); err != nil || !bytes.Equal(got, request) {
				t.Fatalf("B read the request: %v", err)
			}
			go peerB.Write(response)
			got = make([]byte, len(response))
			if _, err := io.ReadFull(peerA, got); err != nil || !bytes.Equal(got, response) {
				t.Fatalf("A read the response: %v", err)
			}
			if tc.halfA {
				closeWrite(t, peerA)
			} else {
				peerA.Close()
			}
			if n, err := peerB.Read(make([]byte, 1)); err != io.EOF {
				t.Fatalf("B read %d bytes, %v after A hung up; want EOF", n, err)
			}
			r := wait(t, res)
			if r.AToB != int64(len(request)) || r.BToA != int64(len(response)) {
				t.Fatalf("Result = %+v, want AToB %d, BToA %d", r, len(request), len(response))
			}
			if r.Err != nil {
				t.Fatalf("Result.Err = %v after a clean hang-up", r.Err)
			}
		})
	}
}

// A peer that resets its connection ends both directions at once: Join
// returns with the error, and the other peer sees its connection closed
// rather than waiting forever.
func TestJoinErrorEndsBothDirections(t *testing.T) {
	peerA, peerB, res := joined(t, tcp)
	peerB.SetDeadline(time.Now().Add(10 * time.Second))
	// Make sure both directions are running before the reset.
	peerA.Write([]byte("hello"))
	if _, err := io.ReadFull(peerB, make([]byte, 5)); err != nil {
		t.Fatal(err)
	}
	peerA.(*net.TCPConn).SetLinger(0)
	peerA.Close()

	// B never sends nor closes: Join must not wait for it.
	r := wait(t, res)
	if !errors.Is(r.Err, syscall.ECONNRESET) {
		t.Fatalf("Result.Err = %v, want the reset", r.Err)
	}
	// B's connection was closed by Join: B reads the end, and soon
	// cannot write any more.
	if n, err := peerB.Read(make([]byte, 1)); err == nil {
		t.Fatalf("B read %d bytes from a joined connection whose other side was reset", n)
	}
	var werr error
	for range 100 {
		if _, werr = peerB.Write([]byte("still there?")); werr != nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if werr == nil {
		t.Fatal("B can still write 1s after Join returned: its connection was not closed")
	}
}
