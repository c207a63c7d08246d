package pipe_test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/loopback"
	"github.com/sallyport/sallyport/internal/pipe"
)

// started starts a join between a TCP connection and a net.Pipe, with
// copiers that linger for the given time (0: as Start), and returns the
// outer ends and the channel its result arrives on. Only the direction
// from TCP can rest: a net.Pipe cannot say when it is readable.
func started(t *testing.T, linger time.Duration) (peerTCP *net.TCPConn, peerMem net.Conn, x *pipe.Exchange, res chan pipe.Result) {
	t.Helper()
	peerTCP, a := loopback.Pair(t)
	b, peerMem := memPair(t)
	res = make(chan pipe.Result, 2)
	if linger == 0 {
		x = pipe.Start(a, b, func(r pipe.Result) { res <- r })
	} else {
		x = pipe.StartLingering(linger, a, b, func(r pipe.Result) { res <- r })
	}
	return peerTCP, peerMem, x, res
}

// awaitResting waits, for at most 10s, until want directions of x rest
// with their source armed; it skips the test where TCP sources cannot
// rest (no poller).
func awaitResting(t *testing.T, x *pipe.Exchange, want int) {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skipf("a TCP source does not rest on %s", runtime.GOOS)
	}
	deadline := time.Now().Add(10 * time.Second)
	for x.Resting() != want {
		if time.Now().After(deadline) {
			t.Fatalf("%d directions rest 10s after the exchange went quiet, want %d", x.Resting(), want)
		}
		time.Sleep(time.Millisecond)
	}
}

// Start returns at once and reports once, with what was carried; an idle
// TCP source is read on readiness, so on Linux a connection at rest costs
// only the goroutine of the direction whose source is not TCP.
func TestStartIdleTCPHasNoGoroutine(t *testing.T) {
	before := runtime.NumGoroutine()
	const n = 20
	peers := make([]*net.TCPConn, n)
	mems := make([]net.Conn, n)
	results := make([]chan pipe.Result, n)
	xs := make([]*pipe.Exchange, n)
	for i := range n {
		peers[i], mems[i], xs[i], results[i] = started(t, 0)
	}
	// Each carries a burst both ways, then rests.
	for i := range n {
		msg := []byte("burst from the TCP side")
		peers[i].Write(msg)
		got := make([]byte, len(msg))
		mems[i].SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(mems[i], got); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("conn %d: %q, %v", i, got, err)
		}
		go mems[i].Write([]byte("reply"))
		peers[i].SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(peers[i], got[:5]); err != nil || string(got[:5]) != "reply" {
			t.Fatalf("conn %d: reply %q, %v", i, got[:5], err)
		}
	}
	want := 2 * n // a goroutine per direction
	if runtime.GOOS == "linux" {
		for i := range n {
			awaitResting(t, xs[i], 1)
		}
		want = n + 1 // and the poller's
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine()-before > want && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := runtime.NumGoroutine() - before; got > want {
		t.Errorf("%d resting connections hold %d goroutines, want at most %d", n, got, want)
	}
	for i := range n {
		peers[i].CloseWrite()
		mems[i].Close()
		select {
		case r := <-results[i]:
			if r.AToB != int64(len("burst from the TCP side")) || r.BToA != 5 {
				t.Errorf("conn %d: Result %+v", i, r)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("conn %d: no result 10s after both sides closed", i)
		}
	}
}

// Abort ends a resting exchange as cut off: the TCP peer sees a reset,
// the other side a close, and the result comes once, with the error.
// No copier runs for a resting direction: Abort itself must end it.
func TestAbortEndsARestingExchange(t *testing.T) {
	for _, tc := range []struct {
		name    string
		resting int // directions that rest
		start   func(t *testing.T) (peerTCP *net.TCPConn, other net.Conn, x *pipe.Exchange, res chan pipe.Result)
	}{
		{"TCP source resting, the other in a goroutine", 1,
			func(t *testing.T) (*net.TCPConn, net.Conn, *pipe.Exchange, chan pipe.Result) {
				peerTCP, peerMem, x, res := started(t, time.Millisecond)
				peerTCP.Write([]byte("x"))
				peerMem.SetDeadline(time.Now().Add(10 * time.Second))
				if _, err := io.ReadFull(peerMem, make([]byte, 1)); err != nil {
					t.Fatal(err)
				}
				return peerTCP, peerMem, x, res
			}},
		{"TCP and notifying sources resting", 2,
			func(t *testing.T) (*net.TCPConn, net.Conn, *pipe.Exchange, chan pipe.Result) {
				_, fromM, peerTCP, x, res := startedWithMailbox(t)
				return peerTCP, fromM, x, res
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			peerTCP, other, x, res := tc.start(t)
			awaitResting(t, x, tc.resting)
			x.Abort()
			select {
			case r := <-res:
				if !errors.Is(r.Err, net.ErrClosed) {
					t.Errorf("Result.Err = %v, want net.ErrClosed", r.Err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("no result 10s after Abort")
			}
			peerTCP.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := peerTCP.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("TCP peer read %v, want a reset", err)
			}
			other.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := other.Read(make([]byte, 1)); err != io.EOF {
				t.Errorf("other peer read %v, want EOF", err)
			}
			select {
			case r := <-res:
				t.Errorf("a second result: %+v", r)
			case <-time.After(50 * time.Millisecond):
			}
		})
	}
}

// A peer that resets while the exchange rests ends it at once: the
// poller reports the reset as readiness, and the copier it starts finds
// the error.
func TestResetWhileRestingEndsTheExchange(t *testing.T) {
	peerTCP, peerMem, x, res := started(t, time.Millisecond)
	awaitResting(t, x, 1)
	peerTCP.SetLinger(0)
	peerTCP.Close()
	select {
	case r := <-res:
		if !errors.Is(r.Err, syscall.ECONNRESET) {
			t.Errorf("Result.Err = %v, want the reset", r.Err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no result 10s after the peer's reset")
	}
	peerMem.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := peerMem.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("other peer read %v, want EOF", err)
	}
}

// A live exchange tells the bytes carried so far each way (the dashboard's
// live connections show them), both through a direction read on readiness
// (from TCP) and through one copied by a goroutine (from a net.Pipe), and
// its result tells the same.
func TestBytesWhileLive(t *testing.T) {
	peerTCP, peerMem, x, res := started(t, 0)
	want := func(aToB, bToA int64) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			a, b := x.Bytes()
			if a == aToB && b == bToA {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("Bytes() = %d, %d; want %d, %d", a, b, aToB, bToA)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	if a, b := x.Bytes(); a != 0 || b != 0 {
		t.Fatalf("a new exchange has carried %d, %d bytes", a, b)
	}
	up := []byte("hello")
	peerTCP.Write(up)
	got := make([]byte, 64)
	if n, err := io.ReadAtLeast(peerMem, got, len(up)); err != nil || !bytes.Equal(got[:n], up) {
		t.Fatalf("read %q, %v", got[:n], err)
	}
	want(5, 0)
	down := []byte("a reply")
	go peerMem.Write(down)
	if n, err := io.ReadAtLeast(peerTCP, got, len(down)); err != nil || !bytes.Equal(got[:n], down) {
		t.Fatalf("read %q, %v", got[:n], err)
	}
	want(5, 7)
	peerTCP.CloseWrite()
	peerMem.Close()
	r := <-res
	if r.AToB != 5 || r.BToA != 7 {
		t.Fatalf("result %+v, want 5 and 7 bytes", r)
	}
}
