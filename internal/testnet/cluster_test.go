package testnet_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/edge"
	"github.com/sallyport/sallyport/internal/pki"
	"github.com/sallyport/sallyport/internal/store"
	"github.com/sallyport/sallyport/internal/testnet"
	"github.com/sallyport/sallyport/internal/tunnel"
	"github.com/sallyport/sallyport/internal/wire"
)

// natsServer is an external NATS server with JetStream on a loopback
// port, as an operator's would be, that a test can stop and start again
// on the same port and directory.
type natsServer struct {
	t    *testing.T
	dir  string
	port int
	srv  *server.Server
}

func startNATS(t *testing.T) *natsServer {
	n := &natsServer{t: t, dir: t.TempDir(), port: -1}
	n.start()
	t.Cleanup(n.stop)
	return n
}

func (n *natsServer) start() {
	n.t.Helper()
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: n.port, JetStream: true, StoreDir: n.dir, NoSigs: true, NoLog: true})
	if err != nil {
		n.t.Fatal(err)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		n.t.Fatal("NATS did not start")
	}
	n.srv = srv
	n.port = srv.Addr().(*net.TCPAddr).Port
}

func (n *natsServer) stop() {
	if n.srv != nil {
		n.srv.Shutdown()
		n.srv.WaitForShutdown()
		n.srv = nil
	}
}

func (n *natsServer) url() string { return "nats://127.0.0.1:" + strconv.Itoa(n.port) }

// cluster is edges sharing one external NATS and one CA.
type cluster struct {
	t    *testing.T
	nats *natsServer
	// caDir holds the CA every edge gets (the first edge's).
	caDir string
}

// startEdge starts an edge of the cluster exposing echo on its own port;
// tune, if any, changes its config last.
func (cl *cluster) startEdge(tune ...func(*config.Edge)) *testnet.Edge {
	cl.t.Helper()
	dir := filepath.Join(cl.t.TempDir(), "edge")
	if cl.caDir != "" {
		for _, f := range []string{pki.CACertFile, pki.CAKeyFile} {
			b, err := os.ReadFile(filepath.Join(cl.caDir, f))
			if err != nil {
				cl.t.Fatal(err)
			}
			if err := os.MkdirAll(filepath.Join(dir, "pki"), 0o700); err != nil {
				cl.t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "pki", f), b, 0o600); err != nil {
				cl.t.Fatal(err)
			}
		}
	}
	e := testnet.StartEdge(cl.t, testnet.EdgeOptions{
		DataDir: dir,
		Expose:  map[string]string{"echo": ""},
		Tune: func(c *config.Edge) {
			c.Store.URL = cl.nats.url()
			for _, f := range tune {
				f(c)
			}
		},
	})
	if cl.caDir == "" {
		cl.caDir = filepath.Join(dir, "pki")
	}
	return e
}

// echoThrough checks that a client of edge e reaches the echo back-end.
func echoThrough(t *testing.T, e *testnet.Edge) {
	t.Helper()
	e.WaitRoutes(t, "echo", 1, 10*time.Second)
	want := []byte("through " + e.TunnelAddr().String())
	if got := roundTrip(t, e.Dial(t, "echo"), want); !bytes.Equal(got, want) {
		t.Fatalf("through edge %s: got %q, want %q", e.TunnelAddr(), got, want)
	}
}

// eventually polls cond every 10ms until it holds, failing after timeout.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func memberIDs(e *testnet.Edge) []string {
	var ids []string
	for _, a := range e.Members() {
		if !slices.Contains(ids, a.ID) {
			ids = append(ids, a.ID)
		}
	}
	slices.Sort(ids)
	return ids
}

func edgeID(t *testing.T, e *testnet.Edge) string {
	t.Helper()
	return e.Members()[0].ID // an edge lists itself first
}

func addrsOf(edges ...*testnet.Edge) []string {
	var out []string
	for _, e := range edges {
		out = append(out, e.TunnelAddr().String())
	}
	slices.Sort(out)
	return out
}

// TestConnectorFollowsTheCluster: a connector whose keyfile names one
// edge of three keeps a tunnel to each and serves clients through each;
// it drops an edge that stops after the grace period, dials an edge that
// joins without a new keyfile, and drops one that dies without a word
// once its presence lapses.
func TestConnectorFollowsTheCluster(t *testing.T) {
	cl := &cluster{t: t, nats: startNATS(t)}
	a := cl.startEdge()
	b := cl.startEdge()
	c := cl.startEdge()
	for _, e := range []*testnet.Edge{a, b, c} {
		eventually(t, 10*time.Second, "every edge sees three", func() bool { return len(memberIDs(e)) == 3 })
	}

	echo := testnet.Echo(t)
	conn := testnet.StartConnector(t, a.Keyfile(t, "site", time.Hour, "echo"), testnet.ConnectorOptions{
		Services: map[string]string{"echo": echo.Addr()},
		Tune: func(cfg *config.Connector) {
			cfg.Tunnel.JoinSpread = time.Millisecond
			cfg.Tunnel.LeaveGrace = 300 * time.Millisecond
		},
	})
	conn.WaitTunnels(t, 3)
	for _, e := range []*testnet.Edge{a, b, c} {
		echoThrough(t, e)
	}
	if got, want := conn.Edges(), addrsOf(a, b, c); !slices.Equal(got, want) {
		t.Fatalf("connector keeps %v, want %v", got, want)
	}
	// The admin API shows the cluster.
	st, err := b.AdminClient(t).Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Cluster) != 3 || st.Cluster[0].ID != edgeID(t, b) || st.Fenced {
		t.Fatalf("edge b's status: cluster %+v, fenced %v; want b first of three, not fenced", st.Cluster, st.Fenced)
	}
	// It saved the set, for a restart.
	saved, err := os.ReadFile(filepath.Join(conn.Cfg.DataDir, "cluster.json"))
	if err != nil || !strings.Contains(string(saved), c.TunnelAddr().String()) {
		t.Fatalf("cluster.json = %q, %v; want edge c in it", saved, err)
	}

	// C stops gracefully: the others drop it at once, the connector after
	// its grace period, and keeps A and B.
	cID := edgeID(t, c)
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 3*time.Second, "edge a drops c", func() bool { return !slices.Contains(memberIDs(a), cID) })
	eventually(t, 5*time.Second, "the connector drops c", func() bool { return slices.Equal(conn.Edges(), addrsOf(a, b)) })
	if conn.Logs.Count("an edge left the cluster", "edge="+cID) != 1 {
		t.Fatalf("connector did not say edge %s left:\n%s", cID, conn.Logs.Tail(30))
	}
	echoThrough(t, a)
	echoThrough(t, b)

	// D joins: the connector dials it, with the keyfile it had.
	d := cl.startEdge()
	eventually(t, 10*time.Second, "the connector dials d", func() bool { return slices.Equal(conn.Edges(), addrsOf(a, b, d)) })
	conn.WaitTunnels(t, 3)
	echoThrough(t, d)

	// An edge that dies without deleting its key (here: a presence that
	// simply stops being renewed) leaves every edge's set when its key
	// lapses, and the connector stops dialling it.
	ghost, err := store.Open(t.Context(), store.Options{URL: cl.nats.url()})
	if err != nil {
		t.Fatal(err)
	}
	defer ghost.Close()
	dead := closedPort(t)
	if err := ghost.PutPresence(t.Context(), store.EdgePresence{ID: "edge-ghost", Addresses: []string{dead}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the connector dials the ghost", func() bool { return slices.Contains(conn.Edges(), dead) })
	lapsed := time.Now()
	for _, e := range []*testnet.Edge{a, b, d} {
		eventually(t, store.PresenceTTL+5*time.Second, "the ghost's presence lapses", func() bool { return !slices.Contains(memberIDs(e), "edge-ghost") })
	}
	if took := time.Since(lapsed); took < store.PresenceTTL-time.Second {
		t.Fatalf("the ghost left after %s, before its key's lifetime", took)
	}
	eventually(t, 5*time.Second, "the connector drops the ghost", func() bool { return slices.Equal(conn.Edges(), addrsOf(a, b, d)) })

	// A restart starts from the saved set: all three at once.
	if err := conn.Stop(); err != nil {
		t.Fatal(err)
	}
	again := testnet.StartConnector(t, "", testnet.ConnectorOptions{
		DataDir:  conn.Cfg.DataDir,
		Services: map[string]string{"echo": echo.Addr()},
		Tune:     func(cfg *config.Connector) { cfg.Tunnel.JoinSpread = time.Hour }, // no announcement may be needed
	})
	again.WaitTunnels(t, 3)
	if got, want := again.Edges(), addrsOf(a, b, d); !slices.Equal(got, want) {
		t.Fatalf("restarted connector keeps %v, want %v", got, want)
	}
}

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// TestFenceWhenStoreLost: edges that lose their store fence themselves
// within 2s (clients refused, hellos refused with the reason, tunnels
// closed), and serve again once it is back.
func TestFenceWhenStoreLost(t *testing.T) {
	cl := &cluster{t: t, nats: startNATS(t)}
	a := cl.startEdge()
	b := cl.startEdge()
	echo := testnet.Echo(t)
	conn := testnet.StartConnector(t, a.Keyfile(t, "site", time.Hour, "echo"), testnet.ConnectorOptions{
		Services: map[string]string{"echo": echo.Addr()},
		Tune:     func(cfg *config.Connector) { cfg.Tunnel.JoinSpread = time.Millisecond },
	})
	conn.WaitTunnels(t, 2)
	echoThrough(t, a)
	echoThrough(t, b)

	later := a.Keyfile(t, "site-2", time.Hour, "echo") // redeemed while fenced
	mark := conn.Logs.Mark()
	cl.nats.stop()
	for _, e := range []*testnet.Edge{a, b} {
		// The fence takes 1.5s without a fresh tick; 3s allows for a
		// loaded machine.
		eventually(t, 3*time.Second, "edge fenced", e.Fenced)
		if st, err := e.AdminClient(t).Status(t.Context()); err != nil || !st.Fenced {
			t.Fatalf("a fenced edge's status: fenced %v, %v", st.Fenced, err)
		}
		if e.Logs.Count("edge fenced") != 1 {
			t.Fatalf("fence logged %d times", e.Logs.Count("edge fenced"))
		}
		s := scrape(t, e.AdminAddr().String(), metricsToken(t, e.Cfg.DataDir))
		s.want(t, `sallyport_edge_fenced{}`, 1)
		if s[`sallyport_edge_fence_round_duration_seconds_count{result="stale"}`] == 0 || s[`sallyport_store_operations_total{operation="put_presence",result="error"}`] == 0 {
			t.Errorf("a fenced edge's metrics show no stale fence round or no failed presence write:\n%s", strings.Join(s.sallyport(), "\n"))
		}
	}
	eventually(t, 3*time.Second, "tunnels closed", func() bool { return conn.Tunnels() == 0 })
	for _, e := range []*testnet.Edge{a, b} {
		c := e.Dial(t, "echo")
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write([]byte("hello?"))
		if got, _ := io.ReadAll(c); len(got) != 0 {
			t.Fatalf("a fenced edge carried a client: %q", got)
		}
		e.Logs.WaitFor(t, 5*time.Second, 1, "client refused", "reason=store_lost")
		scrape(t, e.AdminAddr().String(), metricsToken(t, e.Cfg.DataDir)).want(t, `sallyport_edge_clients_refused_total{listener="tcp",reason="store_lost",service="echo"}`, 1)
	}
	conn.Logs.WaitForSince(t, mark, 5*time.Second, 1, "tunnel dial failed", edge.FencedReason)
	// An enrollment is refused with the reason, uses nothing up, and the
	// connector tries again (the refusal decides nothing).
	waiting := testnet.StartConnector(t, later, testnet.ConnectorOptions{Services: map[string]string{"echo": echo.Addr()},
		Tune: func(cfg *config.Connector) { cfg.Tunnel.JoinSpread = time.Millisecond }})
	waiting.Logs.WaitFor(t, 10*time.Second, 2, "enrollment attempt failed", edge.FencedReason)

	cl.nats.start()
	for _, e := range []*testnet.Edge{a, b} {
		eventually(t, 15*time.Second, "edge unfenced", func() bool { return !e.Fenced() })
		e.Logs.WaitFor(t, time.Second, 1, "edge unfenced")
		scrape(t, e.AdminAddr().String(), metricsToken(t, e.Cfg.DataDir)).want(t, `sallyport_edge_fenced{}`, 0)
	}
	conn.WaitTunnels(t, 2)
	// The connector refused while fenced enrolls by itself: two
	// connectors offer echo at each edge now.
	waiting.WaitTunnels(t, 2)
	for _, e := range []*testnet.Edge{a, b} {
		e.WaitRoutes(t, "echo", 2, 10*time.Second)
	}
	// The watches survived the outage: grants withdrawn at b reach a's
	// routes, and an edge that starts now is seen by both.
	for _, name := range []string{"site", "site-2"} {
		if _, err := b.AdminClient(t).Grant(t.Context(), name, "echo", false); err != nil {
			t.Fatal(err)
		}
	}
	a.WaitRoutes(t, "echo", 0, 5*time.Second)
	c := cl.startEdge()
	for _, e := range []*testnet.Edge{a, b} {
		eventually(t, 5*time.Second, "the new edge seen after the outage", func() bool { return slices.Contains(memberIDs(e), edgeID(t, c)) })
	}
	// It follows all three.
	waiting.WaitTunnels(t, 3)
}

// TestMembershipUpdateAttacks: an edge (or whoever holds a tunnel's
// edge end) that sends a malformed, oversized or undialable edge set
// changes nothing at the connector but one warning; and a connector
// cannot make an edge announce anything: a membership stream it opens
// ends its tunnel.
func TestMembershipUpdateAttacks(t *testing.T) {
	t.Run("edge sends bad sets", func(t *testing.T) {
		rogue := testnet.StartRogueEdge(t)
		dir := filepath.Join(t.TempDir(), "connector")
		rogue.Enroll(t, dir, "site")
		echo := testnet.Echo(t)
		conn := testnet.StartConnector(t, "", testnet.ConnectorOptions{
			DataDir: dir, Edges: []string{rogue.Addr()},
			Services: map[string]string{"echo": echo.Addr()},
		})
		sess, _ := rogue.AcceptTunnel(t)
		conn.WaitTunnels(t, 1)
		good, _ := wire.AppendEdgeSet(nil, []wire.EdgeAddr{{ID: "x", Address: "127.0.0.1:1"}})
		for i, body := range [][]byte{
			bytes.Repeat([]byte{1}, wire.MaxEdgeSet+100),                // oversized
			{wire.MaxEdges + 1},                                         // too many
			good[:len(good)-2],                                          // cut short
			append(slices.Clone(good), 'x'),                             // trailing bytes
			{1, 1, 'x', 9, 'n', 'o', '-', 'p', 'o', 'r', 't', ':', 'x'}, // not host:port
			{0}, // empty
		} {
			st, err := sess.Open(wire.StreamOpen{Service: wire.EdgesService})
			if err != nil {
				t.Fatal(err)
			}
			st.SetDeadline(time.Now().Add(5 * time.Second))
			st.Write(body)
			st.CloseWrite()
			var ref *wire.Refusal
			if err := st.Accepted(); !errors.As(err, &ref) || ref.Code != wire.CodeBadRequest {
				t.Fatalf("set %d: connector answered %v, want a bad-request refusal", i, err)
			}
			st.Close()
			if n := conn.Logs.Count("membership update this connector cannot read"); n != i+1 {
				t.Fatalf("set %d: %d warnings, want %d:\n%s", i, n, i+1, conn.Logs.Tail(10))
			}
		}
		if got := conn.Edges(); !slices.Equal(got, []string{rogue.Addr()}) {
			t.Fatalf("bad sets changed the edges to %v", got)
		}
		if conn.Tunnels() != 1 || sess.IsClosed() {
			t.Fatal("the tunnel did not survive bad sets")
		}
		// It still carries streams.
		st, err := sess.Open(wire.StreamOpen{Service: "echo", Client: "127.0.0.1:9"})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		st.SetDeadline(time.Now().Add(5 * time.Second))
		st.Write([]byte("ping"))
		st.CloseWrite()
		if got, err := io.ReadAll(st); string(got) != "ping" {
			t.Fatalf("stream after bad sets: %q, %v", got, err)
		}
	})

	t.Run("connector cannot announce", func(t *testing.T) {
		cl := &cluster{t: t, nats: startNATS(t)}
		a := cl.startEdge()
		conn := testnet.StartConnector(t, a.Keyfile(t, "site", time.Hour, "echo"), testnet.ConnectorOptions{
			Services: map[string]string{"echo": testnet.Echo(t).Addr()},
		})
		conn.WaitTunnels(t, 1)
		cert, ca, err := pki.LoadIdentity(conn.Cfg.DataDir)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := net.Dial("tcp", a.TunnelAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		tc := tls.Client(tunnel.NewTransport(raw), pki.ClientTLSConfig(ca, pki.PinOf(ca), &cert, nil))
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := tc.HandshakeContext(ctx); err != nil {
			t.Fatal(err)
		}
		// The opening as a connector makes it, then, instead of the
		// multiplexer's ping, a raw yamux frame that opens a stream (SYN)
		// carrying a membership header and a set: what a connector's own
		// multiplexer refuses to send.
		err = tunnel.Handshake(ctx, tc, 5*time.Second, func() error {
			if err := wire.WriteMessage(tc, wire.KindHello, wire.Hello{Instance: "evil", Services: []string{"echo"}}); err != nil {
				return err
			}
			return wire.ReadExpect(tc, wire.KindWelcome, new(wire.Welcome))
		})
		if err != nil {
			t.Fatal(err)
		}
		payload, _ := wire.AppendStreamOpen(nil, wire.StreamOpen{Service: wire.EdgesService})
		payload, _ = wire.AppendEdgeSet(payload, []wire.EdgeAddr{{ID: "evil", Address: "198.18.0.66:5500"}})
		frame := []byte{0, 0, 0, 1, 0, 0, 0, 1} // version 0, data, SYN, stream 1
		frame = binary.BigEndian.AppendUint32(frame, uint32(len(payload)))
		if _, err := tc.Write(append(frame, payload...)); err != nil {
			t.Fatal(err)
		}
		tc.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.Copy(io.Discard, tc); err != nil {
			t.Fatalf("the edge kept a tunnel whose connector opened a stream: %v", err)
		}
		a.Logs.WaitFor(t, 5*time.Second, 1, "the peer opened a stream")
		for _, m := range a.Members() {
			if m.ID == "evil" {
				t.Fatal("a connector made the edge announce an edge")
			}
		}
	})
}

// TestFenceNeedsBothChecksToFail: an edge whose presence writes fail
// (here: the presence bucket is gone, as when its stream has no leader)
// but whose connectors watch is provably caught up is not fenced: one
// bucket's leader election must not fence every edge (cluster.md §7).
func TestFenceNeedsBothChecksToFail(t *testing.T) {
	cl := &cluster{t: t, nats: startNATS(t)}
	a := cl.startEdge()
	nc, err := nats.Connect(cl.nats.url())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteKeyValue(t.Context(), store.BucketEdges); err != nil {
		t.Fatal(err)
	}
	probe, err := store.Open(t.Context(), store.Options{URL: cl.nats.url()})
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close()
	// Open re-created the bucket; delete it again so that writes fail.
	if err := js.DeleteKeyValue(t.Context(), store.BucketEdges); err != nil {
		t.Fatal(err)
	}
	if err := probe.PutPresence(t.Context(), store.EdgePresence{ID: "probe"}); err == nil {
		t.Fatal("a presence write succeeded without the bucket: the test proves nothing")
	}
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if a.Fenced() {
			t.Fatal("the edge fenced although its connectors watch is caught up")
		}
	}
	echo := testnet.Echo(t)
	conn := testnet.StartConnector(t, a.Keyfile(t, "site", time.Hour, "echo"), testnet.ConnectorOptions{Services: map[string]string{"echo": echo.Addr()}})
	conn.WaitTunnels(t, 1)
	echoThrough(t, a)
}

// announce sends set on a membership stream from the edge end of sess and
// waits for the connector's acceptance.
func announce(t *testing.T, sess *tunnel.Session, set ...wire.EdgeAddr) {
	t.Helper()
	body, err := wire.AppendEdgeSet(nil, set)
	if err != nil {
		t.Fatal(err)
	}
	st, err := sess.Open(wire.StreamOpen{Service: wire.EdgesService})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	st.SetDeadline(time.Now().Add(5 * time.Second))
	st.Write(body)
	st.CloseWrite()
	if err := st.Accepted(); err != nil {
		t.Fatalf("the connector refused a good set: %v", err)
	}
}

// TestConnectorFollowRules: one pool per edge id whatever address names
// it (and per address whatever ids claim it), an edge in edges: is kept when the set leaves it out, an announced
// edge that leaves is dropped after the grace period and not before.
func TestConnectorFollowRules(t *testing.T) {
	rogue := testnet.StartRogueEdge(t)
	dir := filepath.Join(t.TempDir(), "connector")
	rogue.Enroll(t, dir, "site")
	conn := testnet.StartConnector(t, "", testnet.ConnectorOptions{
		DataDir: dir, Edges: []string{rogue.Addr()},
		Services: map[string]string{"echo": testnet.Echo(t).Addr()},
		Tune: func(cfg *config.Connector) {
			cfg.Tunnel.JoinSpread = time.Millisecond
			cfg.Tunnel.LeaveGrace = 500 * time.Millisecond
		},
	})
	sess, _ := rogue.AcceptTunnel(t) // its Welcome says edge "rogue"
	conn.WaitTunnels(t, 1)
	_, port, _ := net.SplitHostPort(rogue.Addr())
	alias := "localhost:" + port // the same edge by another name
	x := closedPort(t)

	// x2 claims x's address: one loop per address, whatever ids say.
	announce(t, sess, wire.EdgeAddr{ID: "rogue", Address: alias}, wire.EdgeAddr{ID: "x", Address: x}, wire.EdgeAddr{ID: "x2", Address: x})
	want := []string{rogue.Addr(), x}
	slices.Sort(want)
	eventually(t, 5*time.Second, "the connector dials x", func() bool { return slices.Equal(conn.Edges(), want) })

	// The set without the pinned edge and without x: x goes after the
	// grace period, the pinned edge stays.
	gone := time.Now()
	announce(t, sess, wire.EdgeAddr{ID: "y", Address: closedPort(t)})
	eventually(t, 5*time.Second, "x dropped", func() bool { return !slices.Contains(conn.Edges(), x) })
	if took := time.Since(gone); took < 500*time.Millisecond {
		t.Fatalf("x dropped after %s, inside its grace period", took)
	}
	if !slices.Contains(conn.Edges(), rogue.Addr()) || conn.Tunnels() != 1 || sess.IsClosed() {
		t.Fatalf("the pinned edge was dropped: edges %v, tunnels %d", conn.Edges(), conn.Tunnels())
	}
}

// TestJoinSpreadOnlyForLaterEdges: a connector that starts knowing no
// set dials every edge of the first set it hears at once (it is one
// connector, not a herd), and waits tunnel.join_spread only before an
// edge announced later, when every connector hears of it at once.
func TestJoinSpreadOnlyForLaterEdges(t *testing.T) {
	cl := &cluster{t: t, nats: startNATS(t)}
	a := cl.startEdge()
	b := cl.startEdge()
	for _, e := range []*testnet.Edge{a, b} {
		eventually(t, 10*time.Second, "every edge sees two", func() bool { return len(memberIDs(e)) == 2 })
	}
	echo := testnet.Echo(t)
	conn := testnet.StartConnector(t, a.Keyfile(t, "site", time.Hour, "echo"), testnet.ConnectorOptions{
		Services: map[string]string{"echo": echo.Addr()},
		Tune:     func(cfg *config.Connector) { cfg.Tunnel.JoinSpread = time.Hour },
	})
	conn.WaitTunnels(t, 2)

	c := cl.startEdge()
	conn.Logs.WaitFor(t, 10*time.Second, 1, "the cluster announces an edge", "edge="+edgeID(t, c))
	if got := conn.Tunnels(); got != 2 {
		t.Fatalf("%d tunnels right after a third edge was announced; want 2 (its dial spread over join_spread)", got)
	}
	if n := conn.Logs.Count("the cluster announces an edge", "edge="+edgeID(t, c), "in=0s"); n != 0 {
		t.Fatalf("the later edge was dialled at once:\n%s", strings.Join(conn.Logs.Lines("the cluster announces an edge"), "\n"))
	}
}

// TestMaxEdges: a connector with tunnel.max_edges 2 of a cluster of three
// keeps tunnels to two edges only, and takes the third when one of its
// two leaves.
func TestMaxEdges(t *testing.T) {
	cl := &cluster{t: t, nats: startNATS(t)}
	edges := []*testnet.Edge{cl.startEdge(), cl.startEdge(), cl.startEdge()}
	for _, e := range edges {
		eventually(t, 10*time.Second, "every edge sees three", func() bool { return len(memberIDs(e)) == 3 })
	}
	echo := testnet.Echo(t)
	conn := testnet.StartConnector(t, edges[0].Keyfile(t, "site", time.Hour, "echo"), testnet.ConnectorOptions{
		Services: map[string]string{"echo": echo.Addr()},
		Tune: func(cfg *config.Connector) {
			cfg.Tunnel.MaxEdges = 2
			cfg.Tunnel.JoinSpread = time.Millisecond
			cfg.Tunnel.LeaveGrace = 300 * time.Millisecond
		},
	})
	twoOf := func(want []*testnet.Edge) {
		t.Helper()
		eventually(t, 10*time.Second, "tunnels to "+strings.Join(addrsOf(want...), ", "), func() bool {
			return slices.Equal(conn.Edges(), addrsOf(want...)) && conn.Tunnels() == 2
		})
	}
	var kept, other []*testnet.Edge
	eventually(t, 10*time.Second, "two edges kept", func() bool {
		kept, other = nil, nil
		got := conn.Edges()
		for _, e := range edges {
			if slices.Contains(got, e.TunnelAddr().String()) {
				kept = append(kept, e)
			} else {
				other = append(other, e)
			}
		}
		return len(kept) == 2 && conn.Tunnels() == 2
	})
	twoOf(kept)
	for _, e := range kept {
		echoThrough(t, e)
	}
	// One of the two leaves: the third takes its place.
	if err := kept[0].Stop(); err != nil {
		t.Fatal(err)
	}
	twoOf([]*testnet.Edge{kept[1], other[0]})
	echoThrough(t, other[0])
}
