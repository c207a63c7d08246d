package tunnel

import (
	"bytes"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/loopback"
	"github.com/sallyport/sallyport/internal/wire"
)

// A stream's receive buffer is given back as its reader takes the bytes:
// a drained backlog leaves no memory behind, with no sweep (hashicorp's
// yamux kept a buffer of the largest backlog's size until Shrink), and
// the stream still carries every byte.
func TestDrainedBuffersAreFreed(t *testing.T) {
	connector, edge := sessions(t, tlsPair, Config{KeepaliveInterval: time.Hour, KeepaliveTimeout: 2 * time.Hour})
	es, cs := openPair(t, edge, connector, wire.StreamOpen{Service: "svc", Client: "192.0.2.1:1"})
	// Half a window, less the header: the reader gives no credit back
	// for less, so both rounds fit the first window.
	data := randomBytes(InitialWindow/2-1024, 7)
	got := make([]byte, len(data))
	for round := range 2 {
		// The backlog waits in cs's buffer.
		if _, err := es.Write(data); err != nil {
			t.Fatalf("round %d: write: %v", round, err)
		}
		settled(t, edge, connector) // the whole backlog has arrived
		before := heapInUse()
		cs.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(cs, got); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("round %d: read %v, bytes equal %v", round, err, bytes.Equal(got, data))
		}
		// Read buffers go back to a sync.Pool, which a second collection
		// empties.
		runtime.GC()
		if freed := before - heapInUse(); freed < int64(len(data))/2 {
			t.Errorf("round %d: reading freed %d bytes; want the drained %d-byte backlog's buffer", round, freed, len(data))
		}
	}
}

func heapInUse() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

// stallConn lets reads through until armed, then only `left` more bytes,
// then blocks every read until closed: a link that goes silent.
type stallConn struct {
	net.Conn
	armed atomic.Bool
	left  atomic.Int64
	stop  chan struct{}
	once  sync.Once
}

func (c *stallConn) Read(b []byte) (int, error) {
	if !c.armed.Load() {
		return c.Conn.Read(b)
	}
	left := c.left.Load()
	if left <= 0 {
		<-c.stop
		return 0, net.ErrClosed
	}
	n, err := c.Conn.Read(b[:min(int64(len(b)), left)])
	c.left.Add(-int64(n))
	return n, err
}

func (c *stallConn) Close() error {
	c.once.Do(func() { close(c.stop) })
	return c.Conn.Close()
}

// A link that goes silent in the middle of a data frame leaves the
// multiplexer reading the frame's body: the dead tunnel is still detected
// and closed. (The link is TCP, whose buffers take what the connector
// sends: the edge's silence check, not the connector's stalled write,
// must end the session.)
func TestSilentMidFrameIsStillDetected(t *testing.T) {
	var stall *stallConn
	pair := func(t testing.TB) (net.Conn, net.Conn) {
		raw, sraw := loopback.Pair(t)
		stall = &stallConn{Conn: sraw, stop: make(chan struct{})}
		return tlsOver(t, raw, stall)
	}
	connector, edge := sessions(t, pair, Config{KeepaliveInterval: 100 * time.Millisecond, KeepaliveTimeout: 600 * time.Millisecond})
	es, cs := openPair(t, edge, connector, wire.StreamOpen{Service: "svc", Client: "192.0.2.1:1"})
	defer es.Close()
	defer cs.Close()
	// The edge gets what its read under way takes of a 64 KiB frame (on
	// loopback, as a rule, its first TCP segment: the header and part of
	// the body), then nothing more, not even the connector's pings.
	stall.left.Store(0)
	stall.armed.Store(true)
	go cs.Write(randomBytes(64<<10, 9))
	select {
	case <-edge.Done():
		if !edge.PeerSilent() {
			t.Error("the session ended, but not for the peer's silence")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the edge has not declared the silent tunnel dead 10s after a 600ms keepalive timeout")
	}
}
