package testnet_test

import (
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/loopback"
	"github.com/sallyport/sallyport/internal/testnet"
)

// Two connectors granted one service are replicas: a new client goes to
// the one with fewer open streams, and once one of them is gone every new
// client reaches the other, with no refusal in between.
func TestReplicasTakeNewStreamsByLoad(t *testing.T) {
	// Site A carries long-lived connections; then site B comes up.
	const held = 8
	e, backA := busyReplica(t, testnet.EdgeOptions{}, held)
	backB := testnet.Echo(t)
	b := testnet.StartConnector(t, e.Keyfile(t, "site-b", time.Hour, "echo"), testnet.ConnectorOptions{
		Services: map[string]string{"echo": backB.Addr()}})
	b.WaitTunnels(t, 1)
	e.WaitRoutes(t, "echo", 2, 10*time.Second)

	// Short connections all go to the idle replica, B: even with the
	// streams of the earlier ones still closing there, it holds fewer
	// than A.
	const short = 5
	for range short {
		echoOnce(t, e)
	}
	if got, want := backA.Accepted(), int64(held); got != want {
		t.Errorf("site A's back-end accepted %d connections, want only the %d held ones: new clients went to the busier replica", got, want)
	}
	if got := backB.Accepted(); got != short {
		t.Errorf("site B's back-end accepted %d connections, want the %d short ones", got, short)
	}

	// B goes away: at once, every new client reaches A.
	if err := b.Stop(); err != nil {
		t.Fatalf("stop site B: %v", err)
	}
	for range short {
		echoOnce(t, e)
	}
	if got, want := backA.Accepted(), int64(held+short); got != want {
		t.Errorf("site A's back-end accepted %d connections, want %d: the clients after B stopped did not all reach A", got, want)
	}
	if got := backB.Accepted(); got != short {
		t.Errorf("site B's back-end accepted %d connections after it stopped, want still %d", got, short)
	}
}

// echoHeld sends msg through conn and checks that the echo comes back
// intact, leaving conn open.
func echoHeld(t *testing.T, conn *net.TCPConn, msg string) {
	t.Helper()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write([]byte(msg)); err != nil {
		t.Fatalf("write %q: %v", msg, err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(conn, got); err != nil {
		t.Fatalf("echo of %q: %v", msg, err)
	}
	if string(got) != msg {
		t.Fatalf("echo %q, want %q", got, msg)
	}
	conn.SetDeadline(time.Time{})
}

// A connector's pool of tunnels is one replica: a connector with two
// tunnels takes as many new streams as one with a single tunnel, spread
// over its two.
func TestReplicaWithAPoolTakesItsShare(t *testing.T) {
	backA, backB := testnet.Echo(t), testnet.Echo(t)
	e := testnet.StartEdge(t, testnet.EdgeOptions{Expose: map[string]string{"echo": ""}})
	a := testnet.StartConnector(t, e.Keyfile(t, "site-a", time.Hour, "echo"), testnet.ConnectorOptions{
		Services: map[string]string{"echo": backA.Addr()}, Pool: 2})
	b := testnet.StartConnector(t, e.Keyfile(t, "site-b", time.Hour, "echo"), testnet.ConnectorOptions{
		Services: map[string]string{"echo": backB.Addr()}})
	a.WaitTunnels(t, 2)
	b.WaitTunnels(t, 1)
	e.WaitRoutes(t, "echo", 3, 10*time.Second)
	for i := range 6 {
		echoHeld(t, e.Dial(t, "echo"), fmt.Sprintf("held %d", i))
	}
	if ga, gb := backA.Accepted(), backB.Accepted(); ga != 3 || gb != 3 {
		t.Fatalf("site A (2 tunnels) got %d of 6 streams, site B (1 tunnel) %d; want 3 each", ga, gb)
	}
	for _, cs := range e.Status(t.Context()).Connectors {
		if cs.Name == "site-a" && (cs.Streams < 1 || cs.Streams > 2) {
			t.Errorf("site A's tunnel from %s carries %d of its 3 streams; want them spread 2 + 1", cs.Remote, cs.Streams)
		}
	}
}

// A replica whose tunnel has gone silent (no ping answered for two
// keepalive intervals) gets no new client while another replica is
// live, however loaded the live one is, and long before the keepalive
// timeout ends the silent tunnel.
func TestSilentReplicaIsPassedOver(t *testing.T) {
	e, _ := busyReplica(t, testnet.EdgeOptions{
		KeepaliveInterval: 200 * time.Millisecond, KeepaliveTimeout: 30 * time.Second,
		Tune: func(c *config.Edge) { c.Tunnel.AnswerTimeout = 300 * time.Millisecond }}, 5)
	backB := testnet.Echo(t)
	relay := loopback.StartRelay(t, e.TunnelAddr().String())
	b := testnet.StartConnector(t, e.Keyfile(t, "site-b", time.Hour, "echo"), testnet.ConnectorOptions{
		Edges: []string{relay.Addr()}, Services: map[string]string{"echo": backB.Addr()},
		KeepaliveInterval: 200 * time.Millisecond, KeepaliveTimeout: 30 * time.Second})
	b.WaitTunnels(t, 1)
	e.WaitRoutes(t, "echo", 2, 10*time.Second)

	relay.Freeze()
	// Until the edge has missed two of B's answers, a client may still be
	// sent to B (and refused after the answer timeout); then every client
	// reaches A. B's tunnel stays up all along (30 s keepalive timeout).
	deadline := time.Now().Add(5 * time.Second)
	for !echoes(e) {
		if time.Now().After(deadline) {
			t.Fatal("no client reached site A within 5s of site B going silent: the silent replica is still picked")
		}
	}
	for i := range 5 {
		if !echoes(e) {
			t.Fatalf("client %d after site B went stale was not served", i)
		}
	}
	if got := backB.Accepted(); got != 0 {
		t.Errorf("site B's back-end accepted %d connections through a frozen link", got)
	}
	e.WaitRoutes(t, "echo", 2, time.Second) // B was passed over, not removed
}

// echoes reports whether a new client of echo gets its bytes back
// within two seconds.
func echoes(e *testnet.Edge) bool {
	conn, err := net.DialTimeout("tcp", e.ServiceAddr("echo").String(), 2*time.Second)
	if err != nil {
		return false
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := conn.Write([]byte("ping")); err != nil {
		return false
	}
	got := make([]byte, 4)
	_, err = io.ReadFull(conn, got)
	return err == nil && string(got) == "ping"
}

// busyReplica starts an edge exposing echo (with o), and connector site-a
// serving it, and holds held connections open through it.
func busyReplica(t *testing.T, o testnet.EdgeOptions, held int) (*testnet.Edge, *testnet.Backend) {
	t.Helper()
	backA := testnet.Echo(t)
	o.Expose = map[string]string{"echo": ""}
	e := testnet.StartEdge(t, o)
	a := testnet.StartConnector(t, e.Keyfile(t, "site-a", time.Hour, "echo"), testnet.ConnectorOptions{
		Services: map[string]string{"echo": backA.Addr()}})
	a.WaitTunnels(t, 1)
	e.WaitRoutes(t, "echo", 1, 10*time.Second)
	for i := range held {
		echoHeld(t, e.Dial(t, "echo"), fmt.Sprintf("held %d", i))
	}
	return e, backA
}

// A replica whose back-end is down refuses at once and so holds no
// streams: by load alone every other new client went to it. Once it has
// refused one for want of its back-end, new clients go to the working
// replica, even while that one is busier.
func TestReplicaWithItsBackendDownIsPassedOver(t *testing.T) {
	const held = 4
	e, backA := busyReplica(t, testnet.EdgeOptions{}, held)
	down := testnet.StartConnector(t, e.Keyfile(t, "site-down", time.Hour, "echo"), testnet.ConnectorOptions{
		Services: map[string]string{"echo": testnet.Refusing(t)}})
	down.WaitTunnels(t, 1)
	e.WaitRoutes(t, "echo", 2, 10*time.Second)

	// The first new client goes to the idle replica, whose back-end is
	// down: it is refused, as a client of a lone broken replica would be.
	conn := e.Dial(t, "echo")
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	conn.Write([]byte("x"))
	if n, _ := conn.Read(make([]byte, 1)); n != 0 {
		t.Fatal("the first client was served: it did not reach the broken replica, and the test proves nothing")
	}
	conn.Close()
	down.Logs.WaitFor(t, 5*time.Second, 1, "stream refused: back-end unreachable")

	const clients = 10
	for range clients {
		echoOnce(t, e)
	}
	if got, want := backA.Accepted(), int64(held+clients); got != want {
		t.Errorf("the working replica's back-end accepted %d connections, want %d: clients went on to the broken one", got, want)
	}
}
