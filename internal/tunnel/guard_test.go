package tunnel

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/sallyport/sallyport/internal/loopback"
	"github.com/sallyport/sallyport/internal/wire"
)

// yamux v0 frame types and flags, as on the wire (see package mux).
const (
	muxTypeData         = 0
	muxTypeWindowUpdate = 1
	muxTypePing         = 2
	muxFlagSYN          = 1
	muxFlagACK          = 2
)

// muxFrame is a yamux frame header, written by hand.
func muxFrame(typ byte, flags uint16, id, length uint32) []byte {
	h := binary.BigEndian.AppendUint16([]byte{0, typ}, flags)
	h = binary.BigEndian.AppendUint32(h, id)
	return binary.BigEndian.AppendUint32(h, length)
}

// handConnector plays a connector by hand against a real edge session,
// over TLS on loopback: the handshake, then a first frame (an answer to no
// ping), which Server waits for. From then on the test writes raw yamux
// frames on c, and reads c only if it wants to. The edge session is closed
// when the test ends.
func handConnector(t *testing.T, cfg Config) (c net.Conn, edge *Session) {
	t.Helper()
	c, e := tlsPair(t)
	errs := make(chan error, 1)
	go func() {
		errs <- Handshake(context.Background(), c, 10*time.Second, func() error {
			if err := wire.WriteMessage(c, wire.KindHello, testHello); err != nil {
				return err
			}
			var w wire.Welcome
			if err := wire.ReadExpect(c, wire.KindWelcome, &w); err != nil {
				return err
			}
			_, err := c.Write(muxFrame(muxTypePing, muxFlagACK, 0, 0))
			return err
		})
	}()
	edge, _ = admit(t, e, cfg)
	t.Cleanup(func() { edge.Close() })
	if err := <-errs; err != nil {
		t.Fatalf("the hand-played connector's handshake: %v", err)
	}
	return c, edge
}

// usage is what the process holds: goroutines, and the bytes of heap and
// stacks in use.
type usage struct {
	goroutines int
	mem        int64
}

func usageNow() usage {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return usage{runtime.NumGoroutine(), int64(m.HeapInuse + m.StackInuse)}
}

// peakAbove samples the usage every 10ms until done is closed or d has
// passed, and returns the most seen above base.
func peakAbove(base usage, done <-chan struct{}, d time.Duration) usage {
	var peak usage
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	timeout := time.After(d)
	for {
		u := usageNow()
		peak.goroutines = max(peak.goroutines, u.goroutines-base.goroutines)
		peak.mem = max(peak.mem, u.mem-base.mem)
		select {
		case <-done:
			return peak
		case <-timeout:
			return peak
		case <-tick.C:
		}
	}
}

// flood writes n frames on c, made by frame, a few thousand to a write,
// until a write fails.
func flood(c net.Conn, n int, frame func(i uint32) []byte) error {
	var b []byte
	for i := range uint32(n) {
		b = append(b, frame(i)...)
		if len(b) >= 48<<10 || int(i) == n-1 {
			if _, err := c.Write(b); err != nil {
				return err
			}
			b = b[:0]
		}
	}
	return nil
}

// An enrolled connector that floods the multiplexer's own frames costs
// the edge next to nothing: pings, stream openings and data frames longer
// than any window break the protocol and end its session at once, with a
// cause that says what it did; window
// updates, for a stream the edge opened and for streams that do not
// exist, only add to counters, and the session stays up. With hashicorp's
// yamux alone, 300,000 pings from a peer that does not read the answers
// held 24,000 to 44,000 goroutines at once (one per ping) and 70 to 115
// MiB, and 300,000 streams opened by a peer that reads, each refused by
// the edge, stayed in the multiplexer's table (145 to 175 MiB).
func TestFloodsAreBounded(t *testing.T) {
	for _, tc := range []struct {
		name  string
		frame func(id, i uint32) []byte // id: a stream the edge opened
		reads bool                      // the flooding peer reads what it is sent
		want  string                    // what the cause names; "" if the session stays up
	}{
		{"pings", func(_, i uint32) []byte { return muxFrame(muxTypePing, muxFlagSYN, 0, i) }, false, "pings"},
		{"stream opens", func(_, i uint32) []byte { return muxFrame(muxTypeWindowUpdate, muxFlagSYN, 1+2*i, 0) }, true, "opened"},
		{"oversized data frames", func(_, i uint32) []byte { return muxFrame(muxTypeData, 0, 1000, MaxWindow+1) }, true, "longer than any"},
		{"window updates", func(id, i uint32) []byte {
			if i%2 == 0 {
				return muxFrame(muxTypeWindowUpdate, 0, id, 1<<20)
			}
			return muxFrame(muxTypeWindowUpdate, 0, 1000+2*i, 1<<20)
		}, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var wg sync.WaitGroup
			t.Cleanup(wg.Wait) // after the connection's cleanup
			c, edge := handConnector(t, Config{})
			if tc.reads {
				wg.Go(func() { io.Copy(io.Discard, c) })
			}
			es, err := edge.Open(wire.StreamOpen{Service: "db", Client: "192.0.2.1:1"})
			if err != nil {
				t.Fatal(err)
			}
			id := es.ms.ID()
			runtime.GC()
			base := usageNow()
			sent := make(chan error, 1)
			wg.Go(func() { sent <- flood(c, 300_000, func(i uint32) []byte { return tc.frame(id, i) }) })
			ended := edge.Done()
			if tc.want == "" {
				ended = nil // the flood runs to its end
			}
			var peak usage
			flooded := make(chan struct{})
			wg.Go(func() { peak = peakAbove(base, flooded, 10*time.Second) })
			var floodErr error
			select {
			case floodErr = <-sent:
			case <-ended:
			case <-time.After(10 * time.Second):
			}
			close(flooded)
			closed := edge.IsClosed()
			c.Close() // ends the flood, if it still runs
			wg.Wait()
			t.Logf("peak above the start: %d goroutines, %d KiB of heap and stacks; session ended %v, cause: %v; the flood's writes: %v",
				peak.goroutines, peak.mem>>10, closed, edge.Cause(), floodErr)
			if peak.goroutines > 200 || peak.mem > 32<<20 {
				t.Errorf("the flood cost %d goroutines and %d MiB at its peak; want at most 200 and 32 MiB", peak.goroutines, peak.mem>>20)
			}
			if tc.want == "" {
				if closed {
					t.Fatalf("the session ended (cause %v); window updates are no reason to", edge.Cause())
				}
				return
			}
			if !closed {
				t.Fatal("the session still runs 10s into the flood")
			}
			if cause := edge.Cause(); !errors.Is(cause, ErrProtocol) || !strings.Contains(cause.Error(), tc.want) {
				t.Errorf("the session's cause is %v; want a protocol violation that names the %s", cause, tc.want)
			}
		})
	}
}

// A peer that stops reading while the edge sends it bulk data is dead
// after about the keepalive timeout, though it goes on sending (so it is
// never silent): the session ends with ErrPeerNotReading, and Close does
// not wait on the dead connection (TLS's Close would, up to 5s, to write
// its close_notify). With yamux alone each write waited a minute and the
// session never ended.
func TestPeerThatStopsReadingIsDead(t *testing.T) {
	cfg := Config{KeepaliveInterval: 100 * time.Millisecond, KeepaliveTimeout: 500 * time.Millisecond}
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait) // after the sessions' cleanup
	c, edge := handConnector(t, cfg)
	es, err := edge.Open(wire.StreamOpen{Service: "db", Client: "192.0.2.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	// The peer lets the stream's bytes come (1 GiB of window) and reads
	// none; it sends all along (ping answers that nobody asked for).
	if _, err := c.Write(muxFrame(muxTypeWindowUpdate, 0, es.ms.ID(), 1<<30)); err != nil {
		t.Fatal(err)
	}
	ping := muxFrame(muxTypePing, muxFlagACK, 0, 0)
	wg.Go(func() {
		tick := time.NewTicker(cfg.KeepaliveInterval)
		defer tick.Stop()
		for {
			select {
			case <-edge.Done():
				return
			case <-tick.C:
				if _, err := c.Write(ping); err != nil {
					return
				}
			}
		}
	})
	start := time.Now()
	wg.Go(func() {
		chunk := randomBytes(64<<10, 3)
		for {
			if _, err := es.Write(chunk); err != nil {
				return
			}
		}
	})
	within(t, 20*cfg.KeepaliveTimeout, edge.Done(), "the edge gives up on a peer that stopped reading")
	t.Logf("the session ended %s after the edge started sending (keepalive timeout %s); cause: %v",
		time.Since(start).Round(time.Millisecond), cfg.KeepaliveTimeout, edge.Cause())
	if !errors.Is(edge.Cause(), ErrPeerNotReading) {
		t.Errorf("the session's cause is %v; want ErrPeerNotReading", edge.Cause())
	}
	closed := make(chan struct{})
	wg.Go(func() {
		edge.Close()
		close(closed)
	})
	within(t, 3*time.Second, closed, "Close after the peer stopped reading")
}

// slowConn reads through a rate limiter: a slow link, or a slow peer that
// goes on reading.
type slowConn struct {
	net.Conn
	lim *rate.Limiter
}

func (c *slowConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b[:min(len(b), c.lim.Burst())])
	c.lim.WaitN(context.Background(), n)
	return n, err
}

// A slow peer that goes on reading is not dead, however long the whole
// takes: 2 MiB on four streams through a link that takes 512 KiB/s, with
// small socket buffers (some eight keepalive timeouts, while the edge's
// writes wait on the link), arrive whole, and the session stays up.
func TestSlowReaderIsNotDead(t *testing.T) {
	cfg := Config{KeepaliveInterval: 100 * time.Millisecond, KeepaliveTimeout: 500 * time.Millisecond}
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait) // after the sessions' cleanup
	raw, sraw := loopback.Pair(t)
	raw.SetReadBuffer(32 << 10)
	sraw.SetWriteBuffer(32 << 10)
	c, e := tlsOver(t, &slowConn{Conn: raw, lim: rate.NewLimiter(512<<10, 16<<10)}, sraw)
	connector, edge, _, _ := handshake(t, c, e, cfg)

	const streams, size = 4, 512 << 10
	type result struct {
		i   int
		got []byte
		err error
	}
	results := make(chan result, streams)
	start := time.Now()
	for i := range streams {
		es, cs := openPair(t, edge, connector, wire.StreamOpen{Service: "db", Client: fmt.Sprintf("192.0.2.1:%d", i+1)})
		wg.Go(func() {
			es.Write(randomBytes(size, uint64(i)))
			es.CloseWrite()
		})
		wg.Go(func() {
			got, err := io.ReadAll(cs)
			results <- result{i, got, err}
		})
	}
	for range streams {
		select {
		case r := <-results:
			if r.err != nil || !bytes.Equal(r.got, randomBytes(size, uint64(r.i))) {
				t.Fatalf("stream %d: read %d bytes (%v), want its %d bytes whole; session ended %v, cause %v",
					r.i, len(r.got), r.err, size, edge.IsClosed(), edge.Cause())
			}
		case <-time.After(time.Minute):
			t.Fatal("the slow transfer has not finished within a minute")
		}
	}
	t.Logf("%d KiB through a 512 KiB/s reader in %s (keepalive timeout %s)", streams*size>>10, time.Since(start).Round(time.Millisecond), cfg.KeepaliveTimeout)
	if edge.IsClosed() || connector.IsClosed() {
		t.Fatalf("a session ended: edge %v (cause %v), connector %v (cause %v)", edge.IsClosed(), edge.Cause(), connector.IsClosed(), connector.Cause())
	}
}
