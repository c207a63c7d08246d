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

// countingConn counts the writes that reach a connection.
type countingConn struct {
	net.Conn
	writes atomic.Int64
}

func (c *countingConn) Write(b []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(b)
}

// Bulk data leaves the edge in writes of several TLS records each, not a
// system call per record, and arrives intact.
func TestTransportGathersRecords(t *testing.T) {
	l := loopback.Listen(t)
	raw, sraw, err := loopback.DialAddr(l, l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	counted := &countingConn{Conn: sraw}
	connector, edge := sessions(t, func(testing.TB) (net.Conn, net.Conn) { return tlsOver(t, raw, counted) }, Config{})
	es, cs := openPair(t, edge, connector, wire.StreamOpen{Service: "db", Client: "198.51.100.7:40000"})
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
	records := size / (16 << 10)
	writes := counted.writes.Load() - before
	t.Logf("%d MiB in %d writes (at least %d TLS records)", size>>20, writes, records)
	if writes > int64(records/2) {
		t.Errorf("%d writes carried %d TLS records: want at least two records a write on average", writes, records)
	}
}
