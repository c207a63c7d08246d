package edge

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/config"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// closedAtOnce reports whether the edge closed c without a word.
func closedAtOnce(c net.Conn) bool {
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

// Silent connections on the tunnel port take at most maxOpenings places;
// beyond that the edge closes new ones at once, and frees places as the
// silent ones go.
func TestTunnelPortBoundsConnectionsInTheirOpening(t *testing.T) {
	logs := &syncBuffer{}
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
	time.Sleep(100 * time.Millisecond) // let the edge take them in
	extra := dial()
	defer extra.Close()
	if !closedAtOnce(extra) {
		t.Fatal("a fourth silent connection was kept while three were in their opening")
	}
	for _, c := range silent {
		c.Close()
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		c := dial()
		kept := !closedAtOnce(c)
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
