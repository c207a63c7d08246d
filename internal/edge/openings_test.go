package edge

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/logbuf"
	"github.com/sallyport/sallyport/internal/openings"
)

// runTunnelEdge runs an edge with a tunnel port on loopback, logging to
// logs, until the test ends; tune, if set, adjusts it before it runs.
func runTunnelEdge(t *testing.T, logs *logbuf.Buffer, tune func(*Edge)) *Edge {
	t.Helper()
	cfg := config.Edge{
		DataDir: filepath.Join(t.TempDir(), "edge"),
		Tunnel:  config.EdgeTunnel{Listen: "127.0.0.1:0"},
		Admin:   config.Admin{Listen: "127.0.0.1:0"},
	}
	e, err := New(cfg, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if tune != nil {
		tune(e)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	select {
	case <-e.Ready():
	case err := <-done:
		t.Fatal(err)
	}
	return e
}

// closedUnheard reports whether the edge closed c without a word: its
// read ends (EOF or reset) within a bound that only a failure reaches.
func closedUnheard(c net.Conn) bool {
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := c.Read(make([]byte, 1))
	var ne net.Error
	return n == 0 && err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

// heard reports whether the edge took c into its opening: it answers a
// TLS ClientHello (the handshake completes, or ends in the edge's alert)
// instead of closing.
func heard(c net.Conn) bool {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	err := tls.Client(c, &tls.Config{InsecureSkipVerify: true}).Handshake()
	return err == nil || !(errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE))
}

// Silent connections on the tunnel port take at most the openings' places;
// at the bound a new connection pushes out the oldest, so a flood cannot
// keep a connector out; and a connection that sends no TLS record within
// openings.FirstRecordTimeout is closed.
func TestTunnelPortShedsTheOldestOpening(t *testing.T) {
	logs := &logbuf.Buffer{}
	e := runTunnelEdge(t, logs, func(e *Edge) { e.openings = openings.New(3, config.DefaultOpeningsPerSource) })
	dial := func() net.Conn {
		c, err := net.DialTimeout("tcp", e.TunnelAddr().String(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	first := dial()
	for range 2 {
		dial()
	}
	// The edge accepts in order and records each opening before the
	// next: the fourth finds the places taken and pushes out the first.
	fourth := dial()
	if !closedUnheard(first) {
		t.Fatal("the oldest silent connection was kept when a fourth came")
	}
	if !heard(fourth) {
		t.Fatal("the newest connection was not taken into its opening")
	}
	if !strings.Contains(logs.String(), "the oldest closed") {
		t.Errorf("the edge did not say why it closed a connection:\n%s", logs)
	}
	// A connection that says nothing is closed once the first record's
	// time is up.
	quiet := dial()
	start := time.Now()
	if !closedUnheard(quiet) {
		t.Fatal("a silent connection was kept past the first record's deadline")
	}
	if waited := time.Since(start); waited < openings.FirstRecordTimeout/2 {
		t.Errorf("a silent connection was closed after %v, before its first record's time (%v) was up", waited, openings.FirstRecordTimeout)
	}
}
