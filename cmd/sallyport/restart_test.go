package main_test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// backoffMax is the connector's --backoff-max in the restart tests: the
// longest it may wait between two attempts to reach the edge.
const backoffMax = time.Second

// A kill -9 of the edge in the middle of a transfer: the client sees its
// connection end instead of hanging, the connector (untouched) reconnects
// by itself to the edge restarted on the same data directory and ports,
// and a new client gets through.
func TestEdgeKilledDuringTransferThenRestarted(t *testing.T) {
	s := startSite(t, nil, "--backoff-max", backoffMax.String())

	// A client streams bytes through the edge and checks what comes back.
	c, err := net.DialTimeout("tcp", s.edge.services["echo"], 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	data := payload(64 << 10)
	wrote := make(chan error, 1)
	go func() {
		for {
			if _, err := c.Write(data); err != nil {
				wrote <- err
				return
			}
		}
	}()
	got := make([]byte, 4*len(data))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("transfer through the edge: %v", err)
	}
	for i := 0; i < len(got); i += len(data) {
		if !bytes.Equal(got[i:i+len(data)], data) {
			t.Fatalf("transfer through the edge: bytes %d..%d differ from what was sent", i, i+len(data))
		}
	}
	s.echo.WaitOpen(t, 1, 5*time.Second)

	s.edge.signal(t, syscall.SIGKILL)
	if code := s.edge.wait(t, 10*time.Second); code != -1 {
		t.Fatalf("edge exit code %d after kill -9, want death by signal", code)
	}
	killed := time.Now()

	// The in-flight client's connection ends: reads stop with EOF or a
	// reset, well before its 30s deadline.
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, rerr := io.Copy(io.Discard, c)
	if isTimeout(rerr) {
		t.Fatalf("the client's connection hangs after the edge died: %v", rerr)
	}
	c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if werr := <-wrote; isTimeout(werr) {
		t.Fatalf("the client's writes hang after the edge died: %v", werr)
	}
	t.Logf("client saw its connection end %s after the kill (read: %v)", time.Since(killed).Round(time.Millisecond), rerr)
	// The connector drops the dead stream's back-end connection too.
	s.echo.WaitOpen(t, 0, 10*time.Second)
	s.conn.waitLog(t, `msg="tunnel down"`, 1, 10*time.Second)

	s.edge.restart(t)
	restarted := time.Now()
	s.conn.waitLog(t, `msg="tunnel up"`, 2, backoffMax+10*time.Second)
	back := time.Since(restarted)
	t.Logf("connector's tunnel back %s after the edge restarted (--backoff-max %s)", back.Round(time.Millisecond), backoffMax)
	// A bound the operator configured, with slack for a loaded machine:
	// missing it means the backoff is not capped.
	if back > backoffMax+4*time.Second {
		t.Errorf("the connector took %s to come back; --backoff-max is %s", back, backoffMax)
	}
	st := s.edge.waitTunnels(t, "echo", 1, 10*time.Second)
	if len(st.connectors) != 1 || st.connectors[0].name != "site-a" {
		t.Errorf("status after the restart lists %+v, want site-a; output:\n%s", st.connectors, st.text)
	}
	echoes(t, s.edge.services["echo"], payload(8<<10))
	if s.conn.Exited() {
		t.Fatalf("the connector exited (%s); it should have reconnected by itself", s.conn.State())
	}
}

// A kill -9 of the connector, then a restart without --keyfile: it comes
// back with the identity in its data directory and clients work again.
func TestConnectorKilledThenRestartedWithoutKeyfile(t *testing.T) {
	s := startSite(t, nil)
	before := s.edge.status(t)
	echoes(t, s.edge.services["echo"], payload(4<<10))

	s.conn.signal(t, syscall.SIGKILL)
	if code := s.conn.wait(t, 10*time.Second); code != -1 {
		t.Fatalf("connector exit code %d after kill -9, want death by signal", code)
	}
	// The edge notices the tunnel is gone; a client now gets no service.
	s.edge.waitTunnels(t, "echo", 0, 10*time.Second)
	if err := tryEcho(s.edge.services["echo"], []byte("anyone there?")); err == nil {
		t.Fatal("a client was served while no connector was up")
	}

	// The keyfile's token is spent; the restart must not need it.
	if err := os.Remove(s.keyfile); err != nil {
		t.Fatal(err)
	}
	s.conn = startConnector(t, s.connFlags...)
	after := s.edge.waitTunnels(t, "echo", 1, 10*time.Second)
	echoes(t, s.edge.services["echo"], payload(16<<10))
	if len(before.connectors) != 1 || len(after.connectors) != 1 || before.connectors[0].id != after.connectors[0].id {
		t.Errorf("connector before the kill %+v, after the restart %+v: want the same single identity", before.connectors, after.connectors)
	}
	if s.conn.Stderr.Count("connector enrolled") != 0 {
		t.Errorf("the restarted connector enrolled again:\n%s", s.conn.Stderr.String())
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
