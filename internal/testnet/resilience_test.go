package testnet_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/connector"
	"github.com/sallyport/sallyport/internal/logbuf"
	"github.com/sallyport/sallyport/internal/loopback"
	"github.com/sallyport/sallyport/internal/testnet"
	"github.com/sallyport/sallyport/internal/wire"
)

// A compromised edge can name a service, never an address: the connector
// refuses any stream for a name outside its allow-list and dials nothing.
func TestConnectorRefusesWhatItDoesNotOffer(t *testing.T) {
	echo := testnet.Echo(t)
	rogue := testnet.StartRogueEdge(t)
	dir := filepath.Join(t.TempDir(), "connector")
	rogue.Enroll(t, dir, "site-a")
	c := testnet.StartConnector(t, "", testnet.ConnectorOptions{
		DataDir: dir, Edges: []string{rogue.Addr()}, Services: map[string]string{"echo": echo.Addr()},
	})
	sess, hello := rogue.AcceptTunnel(t)
	if len(hello.Services) != 1 || hello.Services[0] != "echo" {
		t.Fatalf("hello offers %v, want [echo]", hello.Services)
	}
	if strings.Contains(string(mustJSON(t, hello)), echo.Addr()) {
		t.Fatal("the connector told the edge its back-end address")
	}
	for _, name := range []string{echo.Addr(), "ssh", "echo.", "localhost:22"} {
		st, err := sess.Open(wire.StreamOpen{Service: name, Client: "198.18.0.9:4000"})
		if err != nil {
			t.Fatal(err)
		}
		_, err = st.Read(make([]byte, 1))
		var ref *wire.Refusal
		if !errors.As(err, &ref) || ref.Code != wire.CodeUnknownService {
			t.Fatalf("stream for %q: %v; want an unknown-service refusal", name, err)
		}
		st.Close()
	}
	if n := echo.Accepted(); n != 0 {
		t.Fatalf("the back-end was dialed %d times for refused names", n)
	}
	c.Logs.WaitFor(t, 5*time.Second, 1, "service not offered by this connector")

	// The service it does offer works through the same tunnel.
	st, err := sess.Open(wire.StreamOpen{Service: "echo", Client: "198.18.0.9:4001"})
	if err != nil {
		t.Fatal(err)
	}
	st.Write([]byte("allowed"))
	st.CloseWrite()
	got, err := io.ReadAll(st)
	if err != nil || string(got) != "allowed" {
		t.Fatalf("allowed service: %q, %v", got, err)
	}
	st.Close()
}

// A stream that names an address is a lookup: the connector answers with
// the service its allow-list serves the address as, or a refusal, and
// ends the stream. It dials nothing and writes no PROXY header, so the
// edge can apply that service's policy before any back-end hears of the
// client. While it drains, it answers "draining", so the edge asks
// elsewhere.
func TestConnectorAnswersAnAddressLookupWithoutDialling(t *testing.T) {
	var got atomic.Int64
	backend := countingEcho(t, &got)
	rogue := testnet.StartRogueEdge(t)
	dir := filepath.Join(t.TempDir(), "connector")
	rogue.Enroll(t, dir, "site-a")
	cfg := testnet.ConnectorConfig(t, "", testnet.ConnectorOptions{
		DataDir: dir, Edges: []string{rogue.Addr()}, Services: map[string]string{"db": backend.Addr()},
	})
	cfg.DrainTimeout = time.Minute // the drain lasts while the test holds a stream
	logs := &logbuf.Buffer{}
	c, err := connector.New(cfg, testLogger(logs, "connector"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	sess, _ := rogue.AcceptTunnel(t)

	lookup := func(address string) wire.StreamReply {
		t.Helper()
		st, err := sess.Open(wire.StreamOpen{Client: "198.18.0.9:4000", Address: address})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		st.SetReadDeadline(time.Now().Add(10 * time.Second))
		var ref *wire.Refusal
		if err := st.Accepted(); err != nil && !errors.As(err, &ref) {
			t.Fatalf("lookup of %s: %v", address, err)
		}
		// The answer is all: the connector then ends the stream.
		var timeout net.Error
		if n, err := st.Read(make([]byte, 1)); n != 0 || err == nil || errors.As(err, &timeout) && timeout.Timeout() {
			t.Fatalf("lookup of %s: after the answer, read %d bytes, %v; want the stream ended", address, n, err)
		}
		return st.Answer()
	}
	if r := lookup(backend.Addr()); r != (wire.StreamReply{Code: wire.CodeOK, Service: "db"}) {
		t.Errorf("lookup of the allowed address: %+v; want OK as service db", r)
	}
	if r := lookup("127.0.0.1:1"); r.Code != wire.CodeUnknownService || !strings.Contains(r.Reason, "allow-list") {
		t.Errorf("lookup of an address the allow-list lacks: %+v; want unknown service", r)
	}
	probeBackend(t, backend)
	if n := backend.Accepted(); n != 1 {
		t.Fatalf("lookups made the connector connect to the back-end %d times", n-1)
	}
	if n := got.Load() - int64(len("probe")); n != 0 {
		t.Fatalf("lookups sent the back-end %d bytes", n)
	}

	// The service the lookup named is then opened by name, on the same
	// tunnel.
	st, err := sess.Open(wire.StreamOpen{Service: "db", Client: "198.18.0.9:4001"})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	st.SetDeadline(time.Now().Add(10 * time.Second))
	b := make([]byte, len("served"))
	if _, err := st.Write([]byte("served")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(st, b); err != nil || string(b) != "served" {
		t.Fatalf("service stream after the lookup: %q, %v", b, err)
	}

	// Draining, with that stream still open: a lookup is told so.
	cancel()
	logs.WaitFor(t, 10*time.Second, 1, "connector stopping: refusing new streams")
	if r := lookup(backend.Addr()); r.Code != wire.CodeDraining {
		t.Errorf("lookup while the connector drains: %+v; want draining", r)
	}
	st.CloseWrite()
	if rest, err := io.ReadAll(st); err != nil || len(rest) != 0 {
		t.Errorf("end of the held stream: %q, %v", rest, err)
	}
	if n := backend.Accepted(); n != 2 {
		t.Errorf("the back-end accepted %d connections, want 2 (the probe and the one service stream)", n)
	}
}

func TestVersionMismatchIsClearOnBothSides(t *testing.T) {
	// A connector from the future meets this edge.
	e := testnet.StartEdge(t, testnet.EdgeOptions{})
	conn, err := tls.Dial("tcp", e.TunnelAddr().String(), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	wire.WritePreamble(conn, wire.Version+1)
	err = wire.ReadPreamble(conn, wire.Version+1)
	var ve *wire.VersionError
	if !errors.As(err, &ve) || ve.Remote != wire.Version {
		t.Fatalf("the newer connector reads %v; want a version error naming version %d", err, wire.Version)
	}
	e.Logs.WaitFor(t, 5*time.Second, 1, "speaks another protocol version")

	// This connector meets an edge from the future.
	rogue := testnet.StartRogueEdge(t)
	dir := filepath.Join(t.TempDir(), "connector")
	rogue.Enroll(t, dir, "site-a")
	c := testnet.StartConnector(t, "", testnet.ConnectorOptions{
		DataDir: dir, Edges: []string{rogue.Addr()}, Services: map[string]string{"x": "127.0.0.1:1"},
	})
	tc := rogue.AcceptTLS(t)
	wire.WritePreamble(tc, wire.Version+1)
	c.Logs.WaitFor(t, 10*time.Second, 1, fmt.Sprintf("protocol version mismatch: peer speaks version %d, this build speaks version %d", wire.Version+1, wire.Version))
}

func TestEdgeRestartConnectorReconnects(t *testing.T) {
	echo := testnet.Echo(t)
	e := testnet.StartEdge(t, testnet.EdgeOptions{Expose: map[string]string{"echo": ""}})
	c := testnet.StartConnector(t, e.Keyfile(t, "site-a", time.Hour, "echo"), testnet.ConnectorOptions{Services: map[string]string{"echo": echo.Addr()}})
	c.WaitTunnels(t, 1)
	e.WaitRoutes(t, "echo", 1, 5*time.Second)
	tunnelAddr, echoAddr := e.TunnelAddr().String(), e.ServiceAddr("echo").String()
	if err := e.Stop(); err != nil {
		t.Fatal(err)
	}
	// The connector notices and keeps trying while the edge is away.
	c.Logs.WaitFor(t, 10*time.Second, 1, "tunnel dial failed")

	e2 := testnet.StartEdge(t, testnet.EdgeOptions{DataDir: e.Cfg.DataDir, TunnelListen: tunnelAddr, Expose: map[string]string{"echo": echoAddr}})
	e2.WaitRoutes(t, "echo", 1, 10*time.Second)
	if got := roundTrip(t, e2.Dial(t, "echo"), []byte("back again")); string(got) != "back again" {
		t.Fatalf("echo after edge restart: %q", got)
	}
}

func TestSilentTunnelIsDetectedAndReplaced(t *testing.T) {
	echo := testnet.Echo(t)
	e := testnet.StartEdge(t, testnet.EdgeOptions{Expose: map[string]string{"echo": ""}})
	relay := loopback.StartRelay(t, e.TunnelAddr().String())
	c := testnet.StartConnector(t, e.Keyfile(t, "site-a", time.Hour, "echo"), testnet.ConnectorOptions{
		Edges: []string{relay.Addr()}, Services: map[string]string{"echo": echo.Addr()},
		KeepaliveInterval: 200 * time.Millisecond, KeepaliveTimeout: time.Second,
	})
	c.WaitTunnels(t, 1)
	e.WaitRoutes(t, "echo", 1, 5*time.Second)

	// A client in the middle of an exchange when the link dies.
	live := e.Dial(t, "echo")
	live.SetDeadline(time.Now().Add(20 * time.Second))
	live.Write([]byte("hello"))
	if _, err := io.ReadFull(live, make([]byte, 5)); err != nil {
		t.Fatal(err)
	}

	relay.Freeze()
	frozen := time.Now()
	for c.Tunnels() != 0 {
		if time.Since(frozen) > 10*time.Second {
			t.Fatal("connector still believes in a tunnel that has been silent for 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	detected := time.Since(frozen)
	e.WaitRoutes(t, "echo", 0, 10*time.Second)
	// Its connection is reset, not closed as if the exchange had ended.
	if _, err := io.ReadAll(live); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("client of a dead tunnel: read error %v; want a connection reset", err)
	}
	t.Logf("silent tunnel detected by the connector after %s (keepalive timeout 1s)", detected.Round(time.Millisecond))
	// Detection is a behaviour with a configured bound, not a speed: allow
	// scheduling slack on a loaded machine, but not a missing keepalive.
	if detected > 4*time.Second {
		t.Errorf("detection took %s; the keepalive timeout is 1s", detected)
	}

	relay.Thaw()
	c.WaitTunnels(t, 1)
	e.WaitRoutes(t, "echo", 1, 10*time.Second)
	if got := roundTrip(t, e.Dial(t, "echo"), []byte("new tunnel")); string(got) != "new tunnel" {
		t.Fatalf("echo over the new tunnel: %q", got)
	}
}

// A client that vanishes mid-download must not leave the back-end
// connection, or any stream, open behind it.
func TestClientAbortReachesTheBackend(t *testing.T) {
	closed := make(chan error, 1)
	firehose := testnet.Serve(t, func(c *net.TCPConn) {
		chunk := bytes.Repeat([]byte("x"), 32<<10)
		for {
			if _, err := c.Write(chunk); err != nil {
				closed <- err
				return
			}
		}
	})
	e, c := setup(t, map[string]string{"firehose": firehose.Addr()})
	conn := e.Dial(t, "firehose")
	if _, err := io.ReadFull(conn, make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	conn.SetLinger(0)
	conn.Close()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("the back-end is still being fed 10s after its client went away")
	}
	waitNoStreams(t, e, c)
}

func TestGracefulStopDrainsLiveConnections(t *testing.T) {
	echo := testnet.Echo(t)
	e, _ := setup(t, map[string]string{"echo": echo.Addr()})
	live := e.Dial(t, "echo")
	live.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := live.Write([]byte("before")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(live, make([]byte, 6)); err != nil {
		t.Fatal(err)
	}
	stopped := make(chan error, 1)
	go func() { stopped <- e.Stop() }()
	e.Logs.WaitFor(t, 5*time.Second, 1, "edge stopping")
	if _, err := net.DialTimeout("tcp", e.ServiceAddr("echo").String(), time.Second); err == nil {
		t.Error("a new client was accepted while the edge drains")
	}
	// The live client still gets its whole exchange.
	if got := roundTrip(t, live, []byte("during drain")); string(got) != "during drain" {
		t.Fatalf("live connection during drain: %q", got)
	}
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("edge did not stop after its last connection ended")
	}
}

func waitNoStreams(t *testing.T, e *testnet.Edge, c *testnet.Connector) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		n := 0
		for _, cs := range e.Status(t.Context()).Connectors {
			n += cs.Streams
		}
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d streams still open at the edge", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestConnectorStopDrainsAndEdgeStopsRouting(t *testing.T) {
	echo := testnet.Echo(t)
	e, c := setup(t, map[string]string{"echo": echo.Addr()})
	live := e.Dial(t, "echo")
	live.SetDeadline(time.Now().Add(20 * time.Second))
	live.Write([]byte("before"))
	if _, err := io.ReadFull(live, make([]byte, 6)); err != nil {
		t.Fatal(err)
	}
	stopped := make(chan error, 1)
	go func() { stopped <- c.Stop() }()
	c.Logs.WaitFor(t, 5*time.Second, 1, "connector stopping")

	// A new client is turned away (the connector drains), and the edge
	// then stops routing to it.
	late := e.Dial(t, "echo")
	late.SetDeadline(time.Now().Add(10 * time.Second))
	if b, err := io.ReadAll(late); err != nil || len(b) != 0 {
		t.Fatalf("client during the connector's drain: %q, %v; want a clean close", b, err)
	}
	e.Logs.WaitFor(t, 5*time.Second, 1, "connector draining")

	if got := roundTrip(t, live, []byte("during drain")); string(got) != "during drain" {
		t.Fatalf("live connection during the connector's drain: %q", got)
	}
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("connector did not stop after its last stream ended")
	}
	e.WaitRoutes(t, "echo", 0, 5*time.Second)
}

func TestTunnelPoolSpreadsStreams(t *testing.T) {
	echo := testnet.Echo(t)
	e := testnet.StartEdge(t, testnet.EdgeOptions{Expose: map[string]string{"echo": ""}})
	c := testnet.StartConnector(t, e.Keyfile(t, "site-a", time.Hour, "echo"), testnet.ConnectorOptions{
		Services: map[string]string{"echo": echo.Addr()}, Pool: 2,
	})
	c.WaitTunnels(t, 2)
	e.WaitRoutes(t, "echo", 2, 10*time.Second)

	// Hold a few streams open and see them on both tunnels.
	var conns []*net.TCPConn
	for i := range 4 {
		conn := e.Dial(t, "echo")
		conn.SetDeadline(time.Now().Add(20 * time.Second))
		msg := []byte(fmt.Sprintf("stream %d", i))
		conn.Write(msg)
		if _, err := io.ReadFull(conn, make([]byte, len(msg))); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, conn)
	}
	st := e.Status(t.Context())
	if len(st.Connectors) != 2 {
		t.Fatalf("edge lists %d tunnels, want the connector's 2", len(st.Connectors))
	}
	for _, cs := range st.Connectors {
		if cs.Streams != 2 {
			t.Errorf("tunnel from %s carries %d of the 4 streams, want 2", cs.Remote, cs.Streams)
		}
	}
	for _, conn := range conns {
		conn.Close()
	}
}

// A drain that times out ends every exchange, even one whose client has
// half-closed and whose back-end never answers (nothing then reads the
// client's side): the edge stops within its drain timeout, and the
// client learns that its exchange was cut off (a reset).
func TestDrainTimeoutEndsAHalfClosedExchange(t *testing.T) {
	gotEOF := make(chan struct{}, 1)
	silent := testnet.Serve(t, func(c *net.TCPConn) {
		io.Copy(io.Discard, c)
		gotEOF <- struct{}{}
		<-t.Context().Done() // never answers
	})
	e := testnet.StartEdge(t, testnet.EdgeOptions{Expose: map[string]string{"silent": ""}, DrainTimeout: 500 * time.Millisecond})
	c := testnet.StartConnector(t, e.Keyfile(t, "site-a", time.Hour, "silent"), testnet.ConnectorOptions{Services: map[string]string{"silent": silent.Addr()}})
	c.WaitTunnels(t, 1)
	e.WaitRoutes(t, "silent", 1, 10*time.Second)

	conn := e.Dial(t, "silent")
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	conn.Write([]byte("a question"))
	conn.CloseWrite()
	select {
	case <-gotEOF:
	case <-time.After(10 * time.Second):
		t.Fatal("the back-end never saw the client's half-close")
	}
	// The exchange may still have a copier lingering or already rest in
	// the poller; pipe's TestAbortEndsARestingExchange covers the resting
	// path deterministically.

	stopped := make(chan error, 1)
	start := time.Now()
	go func() { stopped <- e.Stop() }()
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("edge stopped %v after Stop, drain timeout 500ms", time.Since(start).Round(time.Millisecond))
	case <-time.After(10 * time.Second):
		t.Fatal("edge has not stopped 10s after Stop with a 500ms drain timeout")
	}
	if _, err := conn.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("client read %v after the drain timeout, want a reset", err)
	}
	e.Logs.WaitFor(t, time.Second, 1, "drain timeout")
}

// An edge that crash-loops (each tunnel ends right after its handshake)
// does not leave the connector waiting its longest backoff once the edge
// is stable: every successful handshake starts the backoff again from
// its shortest wait.
func TestReconnectAfterCrashLoopIsPrompt(t *testing.T) {
	rogue := testnet.StartRogueEdge(t)
	dir := filepath.Join(t.TempDir(), "connector")
	rogue.Enroll(t, dir, "site-a")
	// Counted as failures, ten short tunnels would make the next wait
	// 50ms·2^10, capped at backoff_max: 10 to 20s.
	testnet.StartConnector(t, "", testnet.ConnectorOptions{DataDir: dir, Edges: []string{rogue.Addr()}, Services: map[string]string{"echo": testnet.Echo(t).Addr()},
		BackoffMin: 50 * time.Millisecond, BackoffMax: 20 * time.Second})
	for range 10 {
		sess, _ := rogue.AcceptTunnel(t)
		sess.Close()
	}
	up := make(chan struct{})
	go func() {
		rogue.AcceptTunnel(t)
		close(up)
	}()
	select {
	case <-up:
	case <-time.After(5 * time.Second):
		t.Fatal("after ten short-lived tunnels the connector had not reconnected within 5s; a successful handshake must reset its backoff")
	}
}

// A flood of silent connections on the tunnel port from one address,
// more than the edge's openings, cannot keep a real connector out: the
// edge keeps at most a few of that address's openings (pushing out the
// oldest) and drops each once its first TLS record is overdue (2s, where
// it used to hold them 10s and keep everyone else out meanwhile), and the
// connector enrolls and brings its tunnel up while the flood holds on.
func TestTunnelPortFloodDoesNotLockOutAConnector(t *testing.T) {
	echo := testnet.Echo(t)
	e := testnet.StartEdge(t, testnet.EdgeOptions{Expose: map[string]string{"echo": ""}})
	tunnelAddr := e.TunnelAddr().String()
	flooder := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}, Timeout: 5 * time.Second}
	flood := make([]net.Conn, 0, 1100)
	for range cap(flood) {
		c, err := flooder.Dial("tcp", tunnelAddr)
		if err != nil {
			t.Fatal(err)
		}
		flood = append(flood, c)
	}
	t.Cleanup(func() {
		for _, c := range flood {
			c.Close()
		}
	})
	dialed := time.Now()
	c := testnet.StartConnector(t, e.Keyfile(t, "site-a", time.Hour, "echo"), testnet.ConnectorOptions{Services: map[string]string{"echo": echo.Addr()}})
	c.WaitTunnels(t, 1)
	e.WaitRoutes(t, "echo", 1, 10*time.Second)
	if got := roundTrip(t, e.Dial(t, "echo"), []byte("through the flood")); string(got) != "through the flood" {
		t.Fatalf("echo: %q", got)
	}
	// Every flood connection is dropped within a few first-record
	// timeouts of the flood (the edge used to hold 1,024 for 10s).
	for i, fc := range flood {
		fc.SetReadDeadline(dialed.Add(6 * time.Second))
		if _, err := fc.Read(make([]byte, 1)); errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("flood connection %d of %d still held 6s after the flood began", i+1, len(flood))
		}
	}
}
