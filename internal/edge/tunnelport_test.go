package edge

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/admission"
	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/logbuf"
)

// A flood of refusals writes a few lines a second per reason, not one per
// connection; every refusal is still counted, and the next line says how
// many went unlogged.
func TestRefusalLinesAreBounded(t *testing.T) {
	logs := &logbuf.Buffer{}
	e, err := New(config.Edge{DataDir: t.TempDir()}, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	clock := time.Now()
	e.now = func() time.Time { return clock }
	client := admission.Client{Addr: &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 1}, Via: "tcp"}
	for range 1000 {
		e.Refused(admission.Refuse(admission.ReasonDenied, "db", "service db does not let in clients from 192.0.2.1"), client)
	}
	e.Refused(admission.Refuse(admission.ReasonRate, "db", "too fast"), client)
	if n := logs.Count("reason=address_denied"); n != refusalLinesPerSecond {
		t.Errorf("1,000 refusals in one second wrote %d lines, want %d", n, refusalLinesPerSecond)
	}
	if n := logs.Count("reason=rate_limited"); n != 1 {
		t.Errorf("another reason's refusal was not logged (%d lines)", n)
	}
	if n := e.refusals.Snapshot()["address_denied"]; n != 1000 {
		t.Errorf("counted %d refusals, want every one of 1,000", n)
	}
	clock = clock.Add(time.Second)
	e.Refused(admission.Refuse(admission.ReasonDenied, "db", "service db does not let in clients from 192.0.2.1"), client)
	if n := logs.Count("reason=address_denied", "more_refused_unlogged=990"); n != 1 {
		t.Errorf("the next second's first line does not say that 990 went unlogged:\n%s", logs.Tail(3))
	}
}

// Strangers that fail the tunnel port's TLS handshake write a few lines a
// second, not one a connection, and the next line counts the rest.
func TestTunnelPortStrangerLinesAreBounded(t *testing.T) {
	logs := &logbuf.Buffer{}
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	e := runTunnelEdge(t, logs, func(e *Edge) { e.now = func() time.Time { return time.Unix(0, clock.Load()) } })
	// Each stranger speaks HTTP to the tunnel port; the edge logs, then
	// closes it: once it is closed, its line is written.
	stranger := func() {
		c, err := net.DialTimeout("tcp", e.TunnelAddr().String(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
		if !closedUnheard(c) {
			t.Fatal("the edge kept a connection that failed its TLS handshake")
		}
	}
	const strangers = 50
	for range strangers {
		stranger()
	}
	if n := logs.Count("TLS handshake failed"); n != refusalLinesPerSecond {
		t.Errorf("%d failed handshakes in one second wrote %d lines, want %d", strangers, n, refusalLinesPerSecond)
	}
	clock.Add(int64(time.Second))
	stranger()
	if n := logs.Count("TLS handshake failed", fmt.Sprintf("more_unlogged=%d", strangers-refusalLinesPerSecond)); n != 1 {
		t.Errorf("the next second's first line does not count the %d unlogged:\n%s", strangers-refusalLinesPerSecond, logs.Tail(3))
	}
}

// tunnel.receive_budget_mib reaches the tunnels the edge serves.
func TestReceiveBudgetReachesTunnels(t *testing.T) {
	e, err := New(config.Edge{DataDir: t.TempDir(), Tunnel: config.EdgeTunnel{ReceiveBudgetMiB: 8}}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if got := e.tunnelConfig().ReceiveBudget; got != 8<<20 {
		t.Errorf("the tunnels' receive budget is %d bytes, want 8 MiB from tunnel.receive_budget_mib", got)
	}
}
