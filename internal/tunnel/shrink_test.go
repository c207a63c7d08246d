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

	"github.com/sallyport/sallyport/internal/wire"
)

// A stream that once held a backlog keeps a receive buffer of its size
// until the sweep; after the sweep the memory is free, and the stream
// still carries every byte.
func TestShrinkIdleFreesDrainedBuffers(t *testing.T) {
	connector, edge := sessions(t, tlsPair, Config{KeepaliveInterval: time.Hour, KeepaliveTimeout: 2 * time.Hour})
	es, cs := openPair(t, edge, connector, wire.StreamOpen{Service: "svc", Client: "192.0.2.1:1"})
	data := randomBytes(800<<10, 7)
	for round := range 2 {
		// The whole backlog fits the window: it waits in cs's buffer.
		if _, err := es.Write(data); err != nil {
			t.Fatalf("round %d: write: %v", round, err)
		}
		settled(t, edge, connector) // the whole backlog has arrived
		got := make([]byte, len(data))
		cs.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(cs, got); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("round %d: read %v, bytes equal %v", round, err, bytes.Equal(got, data))
		}
		before := heapInUse()
		connector.shrinkIdle()
		if freed := before - heapInUse(); freed < 512<<10 {
			t.Errorf("round %d: the sweep freed %d bytes; want the drained %d-byte backlog's buffer", round, freed, len(data))
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

// A link that goes silent in the middle of a data frame leaves yamux
// reading the frame's body, holding the stream's receive lock. The sweep
// must not stand in the way of the keepalive there: the dead tunnel is
// still detected and closed.
func TestSilentMidFrameIsStillDetected(t *testing.T) {
	var stall *stallConn
	pair := func(t testing.TB) (net.Conn, net.Conn) {
		c, e := memPair(t)
		stall = &stallConn{Conn: e, stop: make(chan struct{})}
		return c, stall
	}
	connector, edge := sessions(t, pair, Config{KeepaliveInterval: 100 * time.Millisecond, KeepaliveTimeout: 600 * time.Millisecond})
	es, cs := openPair(t, edge, connector, wire.StreamOpen{Service: "svc", Client: "192.0.2.1:1"})
	defer es.Close()
	defer cs.Close()
	// The edge gets a frame's header and the start of its body, then
	// nothing more.
	stall.left.Store(muxHeaderSize + 1000)
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
