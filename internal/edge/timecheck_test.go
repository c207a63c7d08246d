package edge

import (
	"crypto/tls"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/logbuf"
	"github.com/sallyport/sallyport/internal/pki"
	"github.com/sallyport/sallyport/internal/tunnel"
	"github.com/sallyport/sallyport/internal/wire"
)

// askTime sends body as a time request on a fresh tunnel-port connection,
// without a client certificate, and returns the edge's answer and
// whether the edge closed the connection after it.
func askTime(t *testing.T, e *Edge, body any) (edgeTime time.Time, closed bool, err error) {
	t.Helper()
	tc, err := tls.Dial("tcp", e.TunnelAddr().String(), pki.EnrollTLSConfig(e.ca.Pin(), nil))
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	var resp wire.TimeResponse
	err = tunnel.Handshake(t.Context(), tc, 5*time.Second, func() error {
		if err := wire.WriteMessage(tc, wire.KindTimeRequest, body); err != nil {
			return err
		}
		return wire.ReadExpect(tc, wire.KindTimeResponse, &resp)
	})
	tc.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, rerr := tc.Read(make([]byte, 1))
	return resp.Time, errors.Is(rerr, io.EOF), err
}

// Anyone who completes the TLS handshake may ask the edge's time (the
// time is no secret, and the asker holds an opening like any stranger),
// and gets it and nothing else: the connection closes, no tunnel comes
// up. A request with more in it is refused.
func TestTimeRequest(t *testing.T) {
	logs := &logbuf.Buffer{}
	e := runTunnelEdge(t, logs, nil)
	before := time.Now()
	got, closed, err := askTime(t, e, wire.TimeRequest{})
	if err != nil || got.Before(before.Add(-time.Second)) || got.After(time.Now().Add(time.Second)) || !closed {
		t.Fatalf("time request: %v, %v (asked at %v), closed after: %v", got, err, before, closed)
	}
	_, closed, err = askTime(t, e, map[string]any{"token": "sp1.x.y"})
	var ref *wire.Refusal
	if !errors.As(err, &ref) || ref.Code != wire.CodeBadRequest || !closed {
		t.Fatalf("time request with a field: %v, closed after: %v", err, closed)
	}
	if n := logs.Count("tunnel up"); n != 0 {
		t.Errorf("a time request brought a tunnel up:\n%s", logs.Tail(5))
	}
}
