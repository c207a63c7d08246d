package netpoll_test

import (
	"errors"
	"os"
	"runtime"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sallyport/sallyport/internal/netpoll"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// poller returns a fresh poller, closed (and its goroutine waited for)
// at the end of the test, or skips where the platform has none.
func poller(t *testing.T) *netpoll.Poller {
	t.Helper()
	p := new(netpoll.Poller)
	if err := p.Open(); err != nil {
		if runtime.GOOS == "linux" {
			t.Fatalf("Open on Linux: %v", err)
		}
		if !errors.Is(err, errors.ErrUnsupported) {
			t.Fatalf("Open = %v, want errors.ErrUnsupported", err)
		}
		t.Skipf("no poller on %s", runtime.GOOS)
	}
	t.Cleanup(func() { closeWithin(t, p) })
	return p
}

// closeWithin closes p, which waits for its goroutine, and fails if that
// takes more than 10s: something is still registered.
func closeWithin(t *testing.T, p *netpoll.Poller) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- p.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Poller.Close has not returned 10s after every source was closed: its goroutine runs on")
	}
}

// pipeEnds is an OS pipe: the test writes w; r is watched.
type pipeEnds struct {
	r, w *os.File
	rc   syscall.RawConn
}

func osPipe(t *testing.T) pipeEnds {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	rc, err := r.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	return pipeEnds{r, w, rc}
}

// armedPipe makes an OS pipe and arms its read end as a source of p
// whose calls arrive on the returned channel. The source is closed at the
// end of the test (before the poller).
func armedPipe(t *testing.T, p *netpoll.Poller) (pipeEnds, *netpoll.Source, chan struct{}) {
	t.Helper()
	e := osPipe(t)
	ch := make(chan struct{}, 16)
	s := p.Source(e.rc, func() { ch <- struct{}{} })
	t.Cleanup(s.Close)
	if err := s.Arm(); err != nil {
		t.Fatal(err)
	}
	return e, s, ch
}

func called(t *testing.T, ch chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("ready not called 10s after %s", what)
	}
}

// barrier makes a second source readable and waits for its call: a call
// for a source that became readable earlier has been made by then, as
// the poller calls back in the order the kernel reports.
func barrier(t *testing.T, p *netpoll.Poller) {
	t.Helper()
	e, s, ch := armedPipe(t, p)
	defer s.Close()
	e.w.Write([]byte("b"))
	called(t, ch, "the barrier's write")
}

// Each Arm gives one call, when bytes come; bytes that come while the
// source is not armed give none until it is armed again.
func TestArmIsOneShot(t *testing.T) {
	p := poller(t)
	e, s, ch := armedPipe(t, p)
	select {
	case <-ch:
		t.Fatal("ready called for a source with nothing to read")
	default:
	}
	e.w.Write([]byte("1"))
	called(t, ch, "a write to an armed source")

	e.w.Write([]byte("2")) // not armed: no call
	barrier(t, p)
	if n := len(ch); n != 0 {
		t.Fatalf("%d calls after a write to a source not armed again", n)
	}
	if err := s.Arm(); err != nil { // still readable: called at once
		t.Fatal(err)
	}
	called(t, ch, "arming a source that holds bytes")
}

// The end of the stream, with nothing to read, counts as readable: the
// reader finds the end.
func TestHangUpIsReadable(t *testing.T) {
	e, _, ch := armedPipe(t, poller(t))
	e.w.Close()
	called(t, ch, "the writer closed")
}

// After Close, a source is not called back and cannot be armed, and the
// poller's goroutine ends once no source is left (Close of the poller
// waits for it: see closeWithin).
func TestClosedSourceIsForgotten(t *testing.T) {
	p := poller(t)
	e, s, ch := armedPipe(t, p)
	s.Close()
	s.Close() // idempotent
	e.w.Write([]byte("x"))
	barrier(t, p)
	if n := len(ch); n != 0 {
		t.Fatalf("%d calls for a closed source", n)
	}
	if err := s.Arm(); !errors.Is(err, netpoll.ErrClosed) {
		t.Fatalf("Arm after Close = %v, want ErrClosed", err)
	}
}

// Many sources armed at once are each called back once for their own
// bytes, and the source may be armed again from its ready call.
func TestManySourcesRearmFromReady(t *testing.T) {
	p := poller(t)
	const n, rounds = 50, 3
	type src struct {
		e  pipeEnds
		s  *netpoll.Source
		ch chan struct{}
	}
	srcs := make([]*src, n)
	for i := range srcs {
		x := &src{e: osPipe(t), ch: make(chan struct{}, rounds+1)}
		x.s = p.Source(x.e.rc, func() {
			var b [8]byte
			x.e.r.Read(b[:]) // takes the byte: the source is empty again
			if err := x.s.Arm(); err != nil {
				t.Errorf("Arm from ready: %v", err)
			}
			x.ch <- struct{}{} // after Arm: the test closes x.s after the last one
		})
		if err := x.s.Arm(); err != nil {
			t.Fatal(err)
		}
		srcs[i] = x
	}
	for r := range rounds {
		for _, x := range srcs {
			x.e.w.Write([]byte{byte(r)})
		}
		for i, x := range srcs {
			select {
			case <-x.ch:
			case <-time.After(10 * time.Second):
				t.Fatalf("round %d: source %d not called back", r, i)
			}
		}
	}
	for _, x := range srcs {
		x.s.Close()
	}
	for i, x := range srcs {
		if k := len(x.ch); k != 0 {
			t.Errorf("source %d: %d calls more than writes", i, k)
		}
	}
}

// A closed poller arms nothing.
func TestClosedPollerRefusesSources(t *testing.T) {
	p := poller(t)
	closeWithin(t, p)
	e := osPipe(t)
	if err := p.Source(e.rc, func() {}).Arm(); !errors.Is(err, netpoll.ErrClosed) {
		t.Fatalf("Arm on a closed poller = %v, want ErrClosed", err)
	}
}
