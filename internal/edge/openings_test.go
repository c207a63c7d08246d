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
)

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

// Silent connections on the tunnel port take at most maxOpenings places;
// beyond that the edge closes new ones at once, and frees places as the
// silent ones go.
func TestTunnelPortBoundsConnectionsInTheirOpening(t *testing.T) {
	logs := &logbuf.Buffer{}
	cfg := config.Edge{
		DataDir: filepath.Join(t.TempDir(), "edge"),
		Tunnel:  config.EdgeTunnel{Listen: "127.0.0.1:0"},
		Admin:   config.Admin{Listen: "127.0.0.1:0"},
	}
	e, err := New(cfg, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	e.maxOpenings = 3
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	select {
	case <-e.Ready():
	case err := <-done:
		t.Fatal(err)
	}
	dial := func() net.Conn {
		c, err := net.DialTimeout("tcp", e.TunnelAddr().String(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	var silent []net.Conn
	for range 3 {
		c := dial()
		defer c.Close()
		silent = append(silent, c)
	}
	// The edge accepts in order, and gives each connection its place
	// before it accepts the next: the fourth finds none.
	extra := dial()
	defer extra.Close()
	if !closedUnheard(extra) {
		t.Fatal("a fourth silent connection was kept while three were in their opening")
	}
	for _, c := range silent {
		c.Close()
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		c := dial()
		kept := heard(c)
		c.Close()
		if kept {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("places were not freed after the silent connections went away")
		}
	}
	if !strings.Contains(logs.String(), "too many connections in their opening") {
		t.Errorf("the edge did not say why it closed connections:\n%s", logs)
	}
}
