package tunnel

import (
	"bytes"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/loopback"
	"github.com/sallyport/sallyport/internal/wire"
)

// countingConn counts the reads and writes that reach a connection.
type countingConn struct {
	net.Conn
	reads, writes atomic.Int64
}

func (c *countingConn) Read(b []byte) (int, error) {
	c.reads.Add(1)
	return c.Conn.Read(b)
}

func (c *countingConn) Write(b []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(b)
}

// Bulk data leaves the edge in writes of several TLS records each, not a
// system call per record, and arrives intact.
func TestTransportGathersRecords(t *testing.T) {
	raw, sraw := loopbackPair(t)
	counted := &countingConn{Conn: sraw}
	_, _, es, cs := streamOver(t, NewTransport(raw), NewTransport(counted))
	const size = 4 << 20
	data := randomBytes(size, 7)
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(cs)
		got <- b
	}()
	before := counted.writes.Load()
	if _, err := es.Write(data); err != nil {
		t.Fatal(err)
	}
	es.CloseWrite()
	select {
	case b := <-got:
		if !bytes.Equal(b, data) {
			t.Fatalf("received %d bytes, not the %d sent", len(b), size)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("4 MiB not received within 20s")
	}
	atLeastTwoRecordsEach(t, "writes", size, counted.writes.Load()-before)
}

// Bulk data reaches the connector in reads of several TLS records each,
// intact, and once the stream is at rest neither end's Transport holds
// a read buffer: it is lent while bytes flow.
func TestTransportLendsItsReadBuffer(t *testing.T) {
	raw, sraw := loopbackPair(t)
	counted := &countingConn{Conn: raw}
	ctr, etr := NewTransport(counted), NewTransport(sraw)
	connector, edge, es, cs := streamOver(t, ctr, etr)
	const size = 4<<20 + 1234
	data := randomBytes(size, 9)
	werr := make(chan error, 1)
	go func() { _, err := es.Write(data); werr <- err }()
	before := counted.reads.Load()
	got := make([]byte, size)
	cs.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.ReadFull(cs, got); err != nil {
		t.Fatalf("read: %v", err)
	}
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("the bytes arrived changed")
	}
	atLeastTwoRecordsEach(t, "reads", size, counted.reads.Load()-before)
	// At rest: after a ping each way, both ends' readers wait for bytes.
	settled(t, edge, connector)
	connector.mux.Ping()
	edge.mux.Ping()
	settled(t, edge, connector)
	settled(t, connector, edge)
	for name, tr := range map[string]*Transport{"connector": ctr, "edge": etr} {
		eventually(t, 5*time.Second, func() bool { return !tr.lent.Load() },
			name+"'s transport gives its read buffer back at rest")
	}
}

// loopbackPair returns the two ends of a TCP connection on loopback.
func loopbackPair(t *testing.T) (raw, sraw net.Conn) {
	t.Helper()
	l := loopback.Listen(t)
	raw, sraw, err := loopback.DialAddr(l, l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	return raw, sraw
}

// streamOver runs TLS, then a connector and an edge session, on the
// connector's Transport ctr and the edge's etr, and opens one stream.
func streamOver(t *testing.T, ctr, etr *Transport) (connector, edge *Session, es, cs *Stream) {
	t.Helper()
	connector, edge = sessions(t, func(testing.TB) (net.Conn, net.Conn) { return tlsOverTransports(t, ctr, etr) }, Config{})
	es, cs = openPair(t, edge, connector, wire.StreamOpen{Service: "db", Client: "198.51.100.7:40000"})
	return connector, edge, es, cs
}

// atLeastTwoRecordsEach fails the test unless calls system calls (what:
// reads or writes) carried size bytes in TLS records, two or more each
// on average.
func atLeastTwoRecordsEach(t *testing.T, what string, size int, calls int64) {
	t.Helper()
	records := size / (16 << 10)
	t.Logf("%d MiB in %d %s (at least %d TLS records)", size>>20, calls, what, records)
	if calls > int64(records/2) {
		t.Errorf("%d %s carried %d TLS records: want at least two records each on average", calls, what, records)
	}
}
