package testnet_test

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/testnet"
)

// dialFrom connects to addr from the loopback address local.
func dialFrom(t *testing.T, local, addr string) *net.TCPConn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// served reports whether the edge carries c to the echo back-end: a byte
// sent comes back, or the edge closes c without one.
func served(t *testing.T, c *net.TCPConn) bool {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte{'x'}); err != nil {
		return false
	}
	var b [1]byte
	_, err := io.ReadFull(c, b[:])
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatal("neither served nor closed within 10s")
		}
	}
	return err == nil && b[0] == 'x'
}

// Client connections are bounded from one address and in all: one over a
// bound is closed at once and counted, and its place comes back when a
// connection ends.
func TestClientConnectionsAreBounded(t *testing.T) {
	echo := testnet.Echo(t)
	e := testnet.StartEdge(t, testnet.EdgeOptions{Expose: map[string]string{"echo": ""}, Tune: func(c *config.Edge) {
		c.Limits = config.Limits{MaxClients: 4, MaxClientsPerSource: 2}
	}})
	c := testnet.StartConnector(t, e.Keyfile(t, "site-a", time.Hour, "echo"), testnet.ConnectorOptions{Services: map[string]string{"echo": echo.Addr()}})
	c.WaitTunnels(t, 1)
	e.WaitRoutes(t, "echo", 1, 10*time.Second)
	addr := e.ServiceAddr("echo").String()

	a1, a2 := dialFrom(t, "127.0.0.1", addr), dialFrom(t, "127.0.0.1", addr)
	if !served(t, a1) || !served(t, a2) {
		t.Fatal("the first two clients from one address were not served")
	}
	if served(t, dialFrom(t, "127.0.0.1", addr)) {
		t.Fatal("a third client from the same address was served past max_clients_per_source 2")
	}
	b1, b2 := dialFrom(t, "127.0.0.2", addr), dialFrom(t, "127.0.0.2", addr)
	if !served(t, b1) || !served(t, b2) {
		t.Fatal("clients from another address were not served")
	}
	if served(t, dialFrom(t, "127.0.0.3", addr)) {
		t.Fatal("a fifth client was served past max_clients 4")
	}
	a1.Close()
	e.Logs.WaitFor(t, 10*time.Second, 1, "client connection closed") // a1's place is free by then
	if !served(t, dialFrom(t, "127.0.0.3", addr)) {
		t.Fatal("a place freed by a closed connection was not given to the next client")
	}
	if n := e.Status(t.Context()).Refusals["too_many_clients"]; n != 2 {
		t.Errorf("too_many_clients counted %d, want 2", n)
	}
	if n := e.Logs.Count("client refused: the limit of client connections from one address is reached"); n != 1 {
		t.Errorf("the per-address refusal was logged %d times, want 1", n)
	}
}
