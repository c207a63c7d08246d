package testnet_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/sallyport/sallyport/internal/admin"
	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/edge"
	"github.com/sallyport/sallyport/internal/testnet"
)

// TestSessionRevokedAtAnotherEdge: a WebSocket session made at edge a and
// carried by edge b (a client the balancer sent there) is revoked at a;
// b ends the connection, told by the store's sessions watch, with policy
// violation and "session revoked".
func TestSessionRevokedAtAnotherEdge(t *testing.T) {
	cl := &cluster{t: t, nats: startNATS(t)}
	withHTTP := func(c *config.Edge) {
		c.Listeners = []config.Listener{{Kind: config.KindHTTP, Listen: "127.0.0.1:0", EdgeHosts: []string{"edge.test"}}}
	}
	a := cl.startEdge(withHTTP)
	b := cl.startEdge(withHTTP)
	echo := testnet.Echo(t)
	conn := testnet.StartConnector(t, a.Keyfile(t, "site", time.Hour, "echo"), testnet.ConnectorOptions{
		Services: map[string]string{"echo": echo.Addr()},
		Edges:    []string{a.TunnelAddr().String(), b.TunnelAddr().String()},
	})
	conn.WaitTunnels(t, 2)
	b.WaitRoutes(t, "echo", 1, 10*time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := a.AdminClient(t).CreateSession(ctx, admin.SessionRequest{Service: "echo"})
	if err != nil {
		t.Fatal(err)
	}
	atB := b.ListenerAddr(0).String()
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, atB)
	}}}
	c, resp, err := websocket.Dial(ctx, "ws://edge.test/s/"+s.Token, &websocket.DialOptions{HTTPClient: client})
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err != nil {
		t.Fatalf("the session's link at edge b: %v", err)
	}
	defer c.CloseNow()
	if got, err := wsRoundTrip(ctx, c, []byte("at b")); err != nil || string(got) != "at b" {
		t.Fatalf("through edge b: %q, %v", got, err)
	}
	b.Logs.WaitFor(t, 5*time.Second, 1, "session used", "session="+s.ID)

	if _, err := a.AdminClient(t).RevokeSession(ctx, s.ID); err != nil {
		t.Fatalf("revoke at edge a: %v", err)
	}
	_, _, err = c.Read(ctx)
	var ce websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.StatusPolicyViolation || !strings.Contains(ce.Reason, edge.SessionRevoked) {
		t.Fatalf("after the revocation at edge a, the client at edge b read %v; want a close with policy violation and %q", err, edge.SessionRevoked)
	}
	b.Logs.WaitFor(t, 5*time.Second, 1, "session revoked: its connection is ended", "session="+s.ID)
}
