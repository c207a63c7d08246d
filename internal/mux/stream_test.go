package mux

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"
)

// Bytes cross intact both ways at once, on one stream and on several
// side by side, over every kind of connection.
func TestBytesIntactBothWays(t *testing.T) {
	size := 64 << 20
	if testing.Short() || raceEnabled {
		size = 8 << 20
	}
	for _, c := range conns {
		for _, streams := range []int{1, 4} {
			t.Run(fmt.Sprintf("%s/streams=%d", c.name, streams), func(t *testing.T) {
				a, b := c.pair(t)
				o, ac := sessions(t, a, b, Config{ReceiveBudget: 64 << 20})
				var wg sync.WaitGroup
				errs := make(chan error, 4*streams)
				for i := range streams {
					ost, ast := open(t, o, ac)
					n := size / streams
					for dir, ends := range [][2]*Stream{{ost, ast}, {ast, ost}} {
						seed := uint64(2*i + dir)
						wg.Go(func() {
							want, err := stream(ends[0], n, seed)
							if err == nil {
								err = ends[0].CloseWrite()
							}
							if err != nil {
								errs <- fmt.Errorf("write: %w", err)
							}
							_ = want
						})
						wg.Go(func() {
							got, k, err := drain(ends[1])
							want, _ := stream(io.Discard, n, seed)
							if err != nil || k != int64(n) || got != want {
								errs <- fmt.Errorf("stream %d, direction %d: read %d of %d bytes (%v), intact %v", i, dir, k, n, err, got == want)
							}
						})
					}
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					t.Error(err)
				}
			})
		}
	}
}

// A half-close ends one direction: the peer reads what was sent, then
// EOF, and may go on sending, whichever side finishes first; a Write
// after CloseWrite fails.
func TestHalfClose(t *testing.T) {
	for _, c := range conns {
		for _, first := range []string{"opener", "acceptor"} {
			t.Run(c.name+"/"+first+" first", func(t *testing.T) {
				a, b := c.pair(t)
				o, ac := sessions(t, a, b, Config{})
				ost, ast := open(t, o, ac)
				x, y := ost, ast
				if first == "acceptor" {
					x, y = ast, ost
				}
				if _, err := x.Write([]byte("request")); err != nil {
					t.Fatal(err)
				}
				if err := x.CloseWrite(); err != nil {
					t.Fatal(err)
				}
				if _, err := x.Write([]byte("more")); !errors.Is(err, ErrWriteClosed) {
					t.Fatalf("Write after CloseWrite = %v, want ErrWriteClosed", err)
				}
				got, err := io.ReadAll(y)
				if err != nil || string(got) != "request" {
					t.Fatalf("the peer read %q, %v; want the request, then EOF", got, err)
				}
				// The other direction goes on, then ends the same way.
				if _, err := y.Write([]byte("answer")); err != nil {
					t.Fatal(err)
				}
				y.CloseWrite()
				got, err = io.ReadAll(x)
				if err != nil || string(got) != "answer" {
					t.Fatalf("the half-closed side read %q, %v; want the answer, then EOF", got, err)
				}
			})
		}
	}
}

// Close resets a stream the peer may still be sending on: the peer's
// reads and writes fail with ErrReset, never EOF, and what it had not
// read is gone. A FIN the peer received before the reset stands: its
// reads end cleanly after the buffered bytes, its writes fail.
func TestReset(t *testing.T) {
	for _, c := range conns {
		t.Run(c.name, func(t *testing.T) {
			a, b := c.pair(t)
			o, ac := sessions(t, a, b, Config{})

			// Unread bytes are discarded.
			ost, ast := open(t, o, ac)
			if _, err := ost.Write([]byte("unread")); err != nil {
				t.Fatal(err)
			}
			if _, err := ast.Write([]byte("also unread")); err != nil {
				t.Fatal(err)
			}
			settled(t, ac, o)
			ost.Close()
			settled(t, o, ac)
			if n, err := ast.Read(make([]byte, 64)); !errors.Is(err, ErrReset) {
				t.Fatalf("Read after the peer's reset = %d, %v; want ErrReset", n, err)
			}
			if _, err := ast.Write([]byte("x")); !errors.Is(err, ErrReset) {
				t.Fatalf("Write after the peer's reset = %v; want ErrReset", err)
			}
			if o.NumStreams() != 0 || ac.NumStreams() != 0 {
				t.Fatalf("streams kept after a reset: %d, %d", o.NumStreams(), ac.NumStreams())
			}

			// A FIN before the reset stands.
			ost, ast = open(t, o, ac)
			ost.Write([]byte("complete"))
			ost.CloseWrite()
			ast.Write([]byte("ignored"))
			settled(t, ac, o)
			ost.Close() // the peer has not finished: a reset
			settled(t, o, ac)
			got, err := io.ReadAll(ast)
			if err != nil || string(got) != "complete" {
				t.Fatalf("after FIN then RST the peer read %q, %v; want the bytes, then EOF", got, err)
			}
			if _, err := ast.Write([]byte("x")); !errors.Is(err, ErrReset) {
				t.Fatalf("Write after FIN and reset = %v; want ErrReset", err)
			}

			// Close after the peer finished sends FIN, not a reset.
			ost, ast = open(t, o, ac)
			ast.Write([]byte("answer"))
			ast.CloseWrite()
			if got, err := io.ReadAll(ost); err != nil || string(got) != "answer" {
				t.Fatalf("read %q, %v", got, err)
			}
			ost.Close()
			if got, err := io.ReadAll(ast); err != nil || len(got) != 0 {
				t.Fatalf("after a close of a finished stream the peer read %q, %v; want EOF", got, err)
			}
		})
	}
}

// Frames for a stream this side closed are skipped, their bodies too.
func TestClosedStreamIsForgotten(t *testing.T) {
	a, b := pipePair(t)
	o, ac := sessions(t, a, b, Config{})
	ost, ast := open(t, o, ac)
	ast.Write([]byte("hello"))
	settled(t, ac, o)
	ast.Close()
	os2, as2 := open(t, o, ac)
	// The opener writes into the stream the acceptor closed before it
	// learns of it; the session goes on.
	ost.Write(bytes.Repeat([]byte("x"), 100<<10))
	os2.Write([]byte("next"))
	os2.CloseWrite()
	if got, err := io.ReadAll(as2); err != nil || string(got) != "next" {
		t.Fatalf("read %q, %v", got, err)
	}
	if ac.NumStreams() != 1 {
		t.Fatalf("the acceptor holds %d streams, want 1", ac.NumStreams())
	}
}

// A session that ends fails the reads of streams the peer had not
// finished with ErrClosed, leaves finished ones readable to EOF, fails
// every write, and Close is idempotent.
func TestSessionEnd(t *testing.T) {
	for _, c := range conns {
		t.Run(c.name, func(t *testing.T) {
			a, b := c.pair(t)
			o, ac := sessions(t, a, b, Config{})
			open1, acc1 := open(t, o, ac)
			open2, acc2 := open(t, o, ac)
			open1.Write([]byte("finished"))
			open1.CloseWrite()
			open2.Write([]byte("cut off"))
			settled(t, o, ac)
			blocked := make(chan error, 1)
			go func() { _, err := open2.Read(make([]byte, 1)); blocked <- err }()
			if err := o.Close(); err != nil {
				t.Fatal(err)
			}
			o.Close()
			if err := <-blocked; !errors.Is(err, ErrClosed) {
				t.Fatalf("a blocked Read on a closed session = %v, want ErrClosed", err)
			}
			if _, err := open2.Write([]byte("x")); !errors.Is(err, ErrClosed) {
				t.Fatalf("Write on a closed session = %v, want ErrClosed", err)
			}
			within(t, 5*time.Second, ac.Done(), "the peer's session ends")
			if got, err := io.ReadAll(acc1); err != nil || string(got) != "finished" {
				t.Fatalf("a finished stream after the session's end: %q, %v; want its bytes, then EOF", got, err)
			}
			if _, err := io.ReadAll(acc2); !errors.Is(err, ErrClosed) {
				t.Fatalf("an unfinished stream after the session's end: %v; want ErrClosed", err)
			}
			if _, err := o.Open(context.Background()); !errors.Is(err, ErrClosed) {
				t.Fatalf("Open on a closed session = %v", err)
			}
			if _, err := ac.Accept(); !errors.Is(err, ErrClosed) {
				t.Fatalf("Accept on an ended session = %v", err)
			}
		})
	}
}

// A go-away is written after everything queued before it, and the peer
// ends its session on it: what was finished before reads to its end.
func TestGoAway(t *testing.T) {
	a, b := tcpPair(t)
	o, ac := sessions(t, a, b, Config{})
	ost, ast := open(t, o, ac)
	data := bytes.Repeat([]byte("z"), 1<<20)
	go func() {
		ost.Write(data)
		ost.CloseWrite()
		<-o.GoAway()
	}()
	type result struct {
		got []byte
		err error
	}
	read := make(chan result, 1)
	go func() { got, err := io.ReadAll(ast); read <- result{got, err} }()
	within(t, 5*time.Second, ac.Done(), "the peer ends on the go-away")
	if !errors.Is(ac.Err(), ErrGoneAway) {
		t.Fatalf("the peer's session error = %v, want ErrGoneAway", ac.Err())
	}
	r := <-read
	if got, err := r.got, r.err; err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read %d bytes, %v; want %d, then EOF", len(got), err, len(data))
	}
}

// Deadlines work ast a net.Conn's: a timeout error, movable while a Read
// or a Write waits.
func TestDeadlines(t *testing.T) {
	a, b := tcpPair(t)
	o, ac := sessions(t, a, b, Config{})
	ost, ast := open(t, o, ac)

	ost.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	_, err := ost.Read(make([]byte, 1))
	var ne net.Error
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Read past its deadline = %v; want a timeout", err)
	}
	// Moved while waiting: far, then near.
	ost.SetReadDeadline(time.Now().Add(time.Hour))
	done := make(chan error, 1)
	go func() { _, err := ost.Read(make([]byte, 1)); done <- err }()
	ost.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Read = %v; want a timeout", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a Read whose deadline moved nearer still waits")
	}
	ost.SetReadDeadline(time.Time{})

	// A Write waiting for credit.
	ost.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
	n, err := ost.Write(make([]byte, 2*InitialWindow))
	if !errors.Is(err, os.ErrDeadlineExceeded) || n != InitialWindow {
		t.Fatalf("Write beyond the window = %d, %v; want %d bytes, then a timeout", n, err, InitialWindow)
	}
	ost.SetWriteDeadline(time.Time{})
	// The stream still works: the reader takes everything, credit flows.
	go func() { ost.Write(make([]byte, 3*InitialWindow)); ost.CloseWrite() }()
	if got, err := io.ReadAll(ast); err != nil || len(got) != 4*InitialWindow {
		t.Fatalf("read %d, %v; want %d", len(got), err, 4*InitialWindow)
	}
}

// Reads that give up at their deadline lose no credit: a reader that
// alternates very short waits with reads of what came gets every byte.
func TestCreditSurvivesDeadlines(t *testing.T) {
	a, b := tcpPair(t)
	o, ac := sessions(t, a, b, Config{})
	ost, ast := open(t, o, ac)
	const size = 8 << 20
	go func() { stream(ost, size, 1); ost.CloseWrite() }()
	want, _ := stream(io.Discard, size, 1)
	var got []byte
	buf := make([]byte, 7000)
	for {
		ast.SetReadDeadline(time.Now().Add(time.Microsecond))
		n, err := ast.Read(buf)
		got = append(got, buf[:n]...)
		if err == io.EOF {
			break
		}
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatal(err)
		}
	}
	if h, _, _ := drain(bytes.NewReader(got)); len(got) != size || h != want {
		t.Fatalf("read %d of %d bytes, intact %v", len(got), size, h == want)
	}
}

// NotifyRead tells a stream once when it has bytes, at once if it has
// already, and on the session's end.
func TestNotifyRead(t *testing.T) {
	a, b := tcpPair(t)
	o, ac := sessions(t, a, b, Config{})
	ost, ast := open(t, o, ac)
	told := make(chan struct{}, 4)
	ast.NotifyRead(func() { told <- struct{}{} })
	settled(t, o, ac)
	select {
	case <-told:
		t.Fatal("told before anything came")
	default:
	}
	ost.Write([]byte("x"))
	within(t, 5*time.Second, told, "told of bytes")
	ast.NotifyRead(func() { told <- struct{}{} })
	within(t, time.Second, told, "told at once of bytes buffered")
	buf := make([]byte, 1)
	if k, err := ast.Read(buf); k != 1 || err != nil {
		t.Fatal(k, err)
	}
	ast.NotifyRead(func() { told <- struct{}{} })
	o.Close()
	within(t, 5*time.Second, told, "told of the session's end")
	if len(told) != 0 {
		t.Fatal("told twice")
	}
}

// A Write waiting for room in the session's outgoing buffer (the peer
// reads nothing) follows its deadline as it moves, and a Close.
func TestWriteDeadlineMovesWhileWaitingForRoom(t *testing.T) {
	c, peer := pipePair(t)
	s := New(c, Config{Opens: true})
	t.Cleanup(func() { s.Close() })
	st, err := s.Open(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// Credit enough; the peer then reads nothing.
	if _, err := peer.Write(frame(typeWindowUpdate, flagACK, st.ID(), 16<<20)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, func() bool { return s.FramesHandled() >= 1 }, "the credit is handled")
	st.SetWriteDeadline(time.Now().Add(time.Hour))
	done := make(chan error, 1)
	go func() { _, err := st.Write(make([]byte, 4<<20)); done <- err }()
	st.SetWriteDeadline(time.Now().Add(20 * time.Millisecond))
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Write = %v; want a timeout", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a Write whose deadline moved nearer still waits for room")
	}
	st.SetWriteDeadline(time.Time{})
	go func() { _, err := st.Write(make([]byte, 4<<20)); done <- err }()
	st.Close()
	select {
	case err := <-done:
		if !errors.Is(err, ErrStreamClosed) {
			t.Fatalf("Write on a stream closed meanwhile = %v; want ErrStreamClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a Write still waits for room after its stream was closed")
	}
}
