package pipe_test

import (
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/loopback"
	"github.com/sallyport/sallyport/internal/pipe"
)

// serve tracks c and reads it until it ends, as a connection handler
// would, then marks it done. The returned channel closes after Done.
func serve(tr *pipe.Tracker, c net.Conn) <-chan struct{} {
	tr.Add(c)
	done := make(chan struct{})
	go func() {
		defer close(done)
		io.Copy(io.Discard, c)
		c.Close()
		tr.Done(c)
	}()
	return done
}

func TestTrackerWaitReturnsZeroWhenAllFinish(t *testing.T) {
	var tr pipe.Tracker
	var peers []net.Conn
	var handlers []<-chan struct{}
	for range 3 {
		peer, c := loopback.Pair(t)
		peers = append(peers, peer)
		handlers = append(handlers, serve(&tr, c))
	}
	go func() {
		for _, p := range peers {
			time.Sleep(20 * time.Millisecond)
			p.Close()
		}
	}()
	start := time.Now()
	if n := tr.Wait(10 * time.Second); n != 0 {
		t.Fatalf("Wait = %d, want 0: every connection finished on its own", n)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatalf("Wait took %s although the connections finished after 60ms", time.Since(start))
	}
	for _, h := range handlers {
		<-h
	}
}

func TestTrackerWaitClosesWhatIsLeft(t *testing.T) {
	for _, left := range []int{1, 3} {
		var tr pipe.Tracker
		finished, c := loopback.Pair(t)
		finishedDone := serve(&tr, c)
		finished.Close()

		var stuck []net.Conn
		for range left {
			peer, c := loopback.Pair(t)
			stuck = append(stuck, peer)
			serve(&tr, c)
		}
		// The finished connection is Done before Wait: it is not counted.
		select {
		case <-finishedDone:
		case <-time.After(10 * time.Second):
			t.Fatal("the handler of a closed connection has not ended 10s after its close")
		}
		waited := make(chan int, 1)
		go func() { waited <- tr.Wait(100 * time.Millisecond) }()
		select {
		case n := <-waited:
			if n != left {
				t.Fatalf("Wait = %d, want the %d connections still open at the timeout", n, left)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Wait has not returned 10s after its 100ms timeout: it did not close what was left")
		}
		for i, p := range stuck {
			p.SetReadDeadline(time.Now().Add(5 * time.Second))
			if n, err := p.Read(make([]byte, 1)); err != io.EOF {
				t.Fatalf("peer %d read %d bytes, %v; want EOF: Wait left its connection open", i, n, err)
			}
		}
	}
}

func TestTrackerDoneIsIdempotent(t *testing.T) {
	var tr pipe.Tracker
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	tr.Done(a) // never added: harmless
	tr.Add(a)
	tr.Add(b)
	tr.Done(a)
	tr.Done(a)
	tr.Done(b)
	tr.Done(b)
	if n := tr.Wait(time.Second); n != 0 {
		t.Fatalf("Wait = %d, want 0", n)
	}
	// The connections were Done, not closed: Wait must not touch them.
	go a.Write([]byte("x"))
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := b.Read(make([]byte, 1)); err != nil {
		t.Fatalf("a connection that was Done before Wait was closed: %v", err)
	}
}

func TestTrackerZeroValueWaitsForNothing(t *testing.T) {
	var tr pipe.Tracker
	if n := tr.Wait(time.Millisecond); n != 0 {
		t.Fatalf("Wait on an empty tracker = %d", n)
	}
}

// A connection attached to an exchange is ended with the exchange: the
// drain's timeout reaches the other side too, even when no goroutine reads
// the tracked connection (its peer half-closed; the other side is silent).
func TestTrackerWaitAbortsAttachedExchanges(t *testing.T) {
	var tr pipe.Tracker
	client, tracked := loopback.Pair(t)
	other, silent := loopback.Pair(t)
	tr.Add(tracked)
	x := pipe.Start(tracked, other, func(pipe.Result) { tr.Done(tracked) })
	tr.Attach(tracked, x)
	client.CloseWrite() // the client is done sending; the back-end never answers
	silent.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(silent); err != nil {
		t.Fatalf("the silent side did not see the half-close: %v", err)
	}
	waited := make(chan int, 1)
	go func() { waited <- tr.Wait(100 * time.Millisecond) }()
	select {
	case n := <-waited:
		if n != 1 {
			t.Errorf("Wait = %d, want 1", n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Wait has not returned 10s after its timeout: the exchange was not ended")
	}
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := client.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("client read %v, want a reset: its exchange was cut off", err)
	}
}
