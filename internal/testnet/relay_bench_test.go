package testnet_test

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/testnet"
)

// BenchmarkRelayThroughput measures one client connection's upload
// through a real edge, tunnel and connector to a back-end that discards:
// the relay's hot path, where the edge counts bytes for its metrics (one
// atomic add per read and per write). Compare it with the same benchmark
// on a commit before metrics (docs/decisions.md has the numbers).
func BenchmarkRelayThroughput(b *testing.B) {
	sink := testnet.Serve(b, func(c *net.TCPConn) { io.Copy(io.Discard, c) })
	e := testnet.StartEdge(b, testnet.EdgeOptions{Expose: map[string]string{"sink": ""}})
	c := testnet.StartConnector(b, e.Keyfile(b, "site-a", time.Hour, "sink"), testnet.ConnectorOptions{Services: map[string]string{"sink": sink.Addr()}})
	c.WaitTunnels(b, 1)
	e.WaitRoutes(b, "sink", 1, 10*time.Second)
	conn := e.Dial(b, "sink")
	chunk := make([]byte, 1<<20)
	b.SetBytes(int64(len(chunk)))
	for b.Loop() {
		conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
		if _, err := conn.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
}
