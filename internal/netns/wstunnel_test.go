//go:build linux

package netns_test

import (
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/netns"
)

// TestTunnelOverWebSocket: the trusted host may open connections to the
// DMZ's port 443 alone, and the DMZ drops its tunnel port: the real
// connector enrolls and keeps its tunnel through a WebSocket on the
// edge's https listener (the keyfile carries the wss:// address, made by
// the real `token create --edge`), and a client outside reaches a
// service through it.
func TestTunnelOverWebSocket(t *testing.T) {
	t.Parallel()
	netns.SkipIfMissing(t, suite.skip)
	s := netns.NewWebSocketStack(t, suite.bin)
	t.Cleanup(func() { checkNoRace(t, s) })
	s.Edge.Log.WaitFor(t, 5*time.Second, 1, "connector enrolled", "via=websocket")
	s.Edge.Log.WaitFor(t, 5*time.Second, 1, "connector tunnel up", "via=websocket")
	s.Connector.Log.WaitFor(t, 5*time.Second, 1, "tunnel up", "edge="+netns.WebSocketEdge)
	if err := s.CheckHello(); err != nil {
		t.Fatal(err)
	}
	// Neither way to the tunnel port is open: the WebSocket was the
	// only way.
	checkDropped(t, s.Topo.Trusted, net.JoinHostPort(netns.DMZTrustedAddr, strconv.Itoa(netns.TunnelPort)))
	// The connector comes back without its keyfile, through the address
	// it enrolled through.
	s.Connector.Stop(5 * time.Second)
	s.RestartConnector(t)
	s.Connector.Log.WaitFor(t, 30*time.Second, 1, "tunnel up", "edge="+netns.WebSocketEdge)
	s.Edge.Log.WaitFor(t, 10*time.Second, 2, "connector tunnel up", "via=websocket")
	if err := s.CheckHello(); err != nil {
		t.Fatalf("after the connector's restart: %v", err)
	}
}
