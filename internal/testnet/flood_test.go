package testnet_test

import (
	"context"
	"encoding/binary"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/tunnel"
	"github.com/sallyport/sallyport/internal/wire"
)

// An enrolled connector that floods the edge with the multiplexer's pings
// and reads none of the answers loses its tunnel at once, and the edge's
// log says why.
func TestPingFloodingConnectorIsCutOff(t *testing.T) {
	e := startListenerEdge(t, []config.Listener{{Kind: config.KindSOCKS5}}, map[string]config.EdgeService{"svc": {}})
	tc := enrolledConn(t, e, "flooder", "svc")
	defer tc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := tunnel.Handshake(ctx, tc, 10*time.Second, func() error {
		if err := wire.WriteMessage(tc, wire.KindHello, wire.Hello{Instance: "flooder", Services: []string{"svc"}}); err != nil {
			return err
		}
		var w wire.Welcome
		return wire.ReadExpect(tc, wire.KindWelcome, &w)
	})
	if err != nil {
		t.Fatal(err)
	}
	// yamux v0 frames by hand: version, type, flags, stream, length.
	frame := func(typ byte, flags uint16, stream, length uint32) []byte {
		h := binary.BigEndian.AppendUint16([]byte{0, typ}, flags)
		return binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(h, stream), length)
	}
	if _, err := tc.Write(frame(2, 2, 0, 0)); err != nil { // a first frame, which the edge waits for
		t.Fatal(err)
	}
	e.waitTunnelsOf(t, "flooder", 1)

	var pings []byte
	for i := range uint32(300_000) {
		pings = append(pings, frame(2, 1, 0, i)...) // a ping request
	}
	tc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	tc.Write(pings) // fails once the edge cuts the tunnel
	e.Logs.WaitFor(t, 10*time.Second, 1, "connector tunnel down", "protocol violation", "pings")
	e.waitTunnelsOf(t, "flooder", 0)
}
