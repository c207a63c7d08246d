package mux

import (
	"context"
	"errors"
	"io"
	"sync"
	"testing"
	"time"
)

// Streams whose readers stop cannot make a session hold more than its
// budget plus an initial window each, and a stream beside them still
// carries its bytes: no stream waits for another.
func TestStalledStreamsNeverFreezeOthers(t *testing.T) {
	const stalled, budget = 50, 4 << 20
	a, b := tcpPair(t)
	o, ac := sessions(t, a, b, Config{ReceiveBudget: budget})
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait) // after the sessions' cleanup
	for range stalled {
		ost, ast := open(t, o, ac)
		wg.Go(func() {
			buf := make([]byte, 64<<10)
			for {
				if _, err := ast.Write(buf); err != nil {
					return
				}
			}
		})
		// The reader takes the start at full speed, so that its window
		// may grow, then stops.
		ost.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(ost, make([]byte, 1<<20)); err != nil {
			t.Fatal(err)
		}
	}
	if r := o.Reserved(); r > budget {
		t.Fatalf("reserved %d bytes, more than the budget %d", r, budget)
	}
	o.mu.Lock()
	held := 0
	for _, st := range o.streams {
		st.mu.Lock()
		held += st.buf.n
		st.mu.Unlock()
	}
	o.mu.Unlock()
	if bound := budget + stalled*InitialWindow; held > bound {
		t.Fatalf("the stalled streams hold %d bytes, more than the budget and their initial windows (%d)", held, bound)
	}
	ost, ast := open(t, o, ac)
	const size = 32 << 20
	go func() { stream(ast, size, 5); ast.CloseWrite() }()
	want, _ := stream(io.Discard, size, 5)
	ost.SetReadDeadline(time.Now().Add(30 * time.Second))
	got, n, err := drain(ost)
	if err != nil || n != size || got != want {
		t.Fatalf("beside stalled streams: %d of %d bytes (%v), intact %v", n, size, err, got == want)
	}
	t.Logf("%d stalled streams hold %d KiB; reserved %d KiB of %d", stalled, held>>10, o.Reserved()>>10, budget>>10)
}

// A stream's window grows while its reader keeps up, each growth taken
// from the budget; once the stream has been idle, it goes back to the
// initial window and the reservation shrinks to what the peer may still
// send, and returns whole when the stream ends.
func TestWindowGrowsThenShrinks(t *testing.T) {
	a, b := tcpPair(t)
	o, ac := sessions(t, a, b, Config{ReceiveBudget: 64 << 20, IdleShrink: 50 * time.Millisecond})
	ost, ast := open(t, o, ac)
	eventually(t, 5*time.Second, func() bool { return o.RTT() > 0 }, "the round trip is measured")
	// A long round trip, whatever the machine's speed: the reader keeps
	// up with it.
	o.rtt.Store(int64(time.Second))
	go stream(ast, 64<<20, 1)
	if _, err := io.ReadFull(ost, make([]byte, 64<<20)); err != nil {
		t.Fatal(err)
	}
	ost.mu.Lock()
	win, res := ost.win, ost.res
	ost.mu.Unlock()
	t.Logf("after 64 MiB: window %d KiB, reserved %d KiB", win>>10, res>>10)
	if win <= InitialWindow || res != win-InitialWindow || o.Reserved() != res {
		t.Fatalf("window %d, stream's reservation %d, session's %d; want a grown window, reserved", win, res, o.Reserved())
	}
	// Idle: nothing has come for more than IdleShrink (the stream's last
	// receipt moved back, rather than waiting for the time to pass).
	ost.mu.Lock()
	ost.lastRecv -= int64(2 * o.cfg.IdleShrink)
	ost.mu.Unlock()
	o.Sweep()
	ost.mu.Lock()
	win, res, credit := ost.win, ost.res, ost.credit
	ost.mu.Unlock()
	if win != InitialWindow || res != max(0, credit-InitialWindow) || o.Reserved() != res {
		t.Fatalf("after idling: window %d, reserved %d (session %d), credit %d; want the initial window and the peer's credit above it reserved", win, res, o.Reserved(), credit)
	}
	// The peer uses up its old credit, at a pace that grows no window (a
	// round trip of a nanosecond: no reader keeps up with that): the
	// reservation returns whole while the stream lives.
	o.rtt.Store(1)
	n := int(credit) + 1<<20
	go stream(ast, n, 2)
	if _, err := io.ReadFull(ost, make([]byte, n)); err != nil {
		t.Fatal(err)
	}
	ost.mu.Lock()
	win, res = ost.win, ost.res
	ost.mu.Unlock()
	if win != InitialWindow || res != 0 || o.Reserved() != 0 {
		t.Fatalf("after the old credit was used: window %d, reserved %d (session %d); want the initial window and nothing reserved", win, res, o.Reserved())
	}
	// It grows again, from the budget, once the reader keeps up.
	o.rtt.Store(int64(time.Second))
	go func() { stream(ast, 8<<20, 3); ast.CloseWrite() }()
	if _, err := io.ReadAll(ost); err != nil {
		t.Fatal(err)
	}
	if r := o.Reserved(); r != 0 {
		t.Fatalf("after the stream ended, %d bytes stay reserved", r)
	}
}

// At most AcceptBacklog streams wait for the peer's Accept: Open waits
// beyond that; a peer that opens beyond the acceptor's backlog gets its
// new streams reset.
func TestBacklog(t *testing.T) {
	a, b := tcpPair(t)
	o, ac := sessions(t, a, b, Config{AcceptBacklog: 4})
	for range 4 {
		if _, err := o.Open(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := o.Open(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Open beyond the backlog = %v; want it to wait until ctx ends", err)
	}
	accept(t, ac)
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := o.Open(ctx); err != nil {
		t.Fatalf("Open once a stream was accepted = %v", err)
	}

	// An opener with a larger backlog than the acceptor's.
	a, b = tcpPair(t)
	o = New(a, Config{Opens: true, AcceptBacklog: 64})
	ac = New(b, Config{AcceptBacklog: 2})
	t.Cleanup(func() { o.Close(); ac.Close() })
	var sts []*Stream
	for range 3 {
		st, err := o.Open(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		sts = append(sts, st)
	}
	sts[2].SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := sts[2].Read(make([]byte, 1)); !errors.Is(err, ErrReset) {
		t.Fatalf("a stream beyond the acceptor's backlog: Read = %v, want ErrReset", err)
	}
	settled(t, o, ac)
	if n := ac.NumStreams(); n != 2 {
		t.Fatalf("the acceptor holds %d streams, want the 2 of its backlog", n)
	}
}
