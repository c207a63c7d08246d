package store

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/logbuf"
	"github.com/sallyport/sallyport/internal/store/storetest"
)

// TestReopen: the edge restarts on the same data directory and finds its
// tokens, their used state and its connectors.
func TestReopen(t *testing.T) {
	dir := t.TempDir()
	ctx := t.Context()
	s, err := Open(ctx, Options{Dir: dir, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	used, unused := newToken("used"), newToken("unused")
	for _, tk := range []Token{used, unused} {
		if err := s.CreateToken(ctx, tk); err != nil {
			t.Fatal(err)
		}
	}
	used, err = s.ConsumeToken(ctx, "used", refuseUsed, "c1", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	conn := Connector{ID: "c1", Name: "site", TokenID: "used", EnrolledAt: time.Now().Truncate(time.Second)}
	if err := s.PutConnector(ctx, conn); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openStore(t, dir)
	for _, want := range []Token{used, unused} {
		got, err := s.GetToken(ctx, want.ID)
		if err != nil {
			t.Fatalf("after restart: %v", err)
		}
		if !sameToken(got, want) {
			t.Fatalf("after restart token = %+v, want %+v", got, want)
		}
	}
	if _, err := s.ConsumeToken(ctx, "used", refuseUsed, "c2", time.Now()); err != errUsed {
		t.Fatalf("after restart a used token redeems again: error = %v", err)
	}
	got, err := s.GetConnector(ctx, "c1")
	if err != nil || !sameConnector(got, conn) {
		t.Fatalf("after restart connector = %+v, %v; want %+v", got, err, conn)
	}
}

// TestDirInUse: a second edge on the same data directory is refused with a
// clear reason instead of corrupting the first one's files.
func TestDirInUse(t *testing.T) {
	dir := t.TempDir()
	first, err := Open(t.Context(), Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	second, err := Open(t.Context(), Options{Dir: dir})
	if err == nil {
		second.Close()
		first.Close()
		t.Fatal("second Open on a directory in use succeeded")
	}
	if !strings.Contains(err.Error(), "in use") {
		t.Errorf("second Open error = %v, want one saying the directory is in use", err)
	}
	if err := first.CreateToken(t.Context(), newToken("still-fine")); err != nil {
		t.Errorf("first store after the refused second Open: %v", err)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	third := openStore(t, dir)
	if _, err := third.GetToken(t.Context(), "still-fine"); err != nil {
		t.Fatalf("Open after the first store closed: %v", err)
	}
}

func TestCloseIdempotent(t *testing.T) {
	s, err := Open(t.Context(), Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
	}
	wg.Wait()
	if err := s.Close(); err != nil {
		t.Fatalf("Close again: %v", err)
	}
	if err := s.CreateToken(t.Context(), newToken("late")); !errors.Is(err, ErrClosed) {
		t.Fatalf("CreateToken after Close error = %v, want ErrClosed", err)
	}
	if _, err := s.ListConnectors(t.Context()); !errors.Is(err, ErrClosed) {
		t.Fatalf("ListConnectors after Close error = %v, want ErrClosed", err)
	}
}

func TestOpenErrors(t *testing.T) {
	if _, err := Open(t.Context(), Options{}); err == nil || !strings.Contains(err.Error(), "Options.Dir") {
		t.Errorf("Open without Dir or URL error = %v, want one naming Options.Dir", err)
	}
	// A file where the directory should be.
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(t.Context(), Options{Dir: filepath.Join(file, "nats")}); err == nil {
		t.Errorf("Open with Dir under a regular file succeeded")
	}
	// Nothing listens on port 1 of loopback.
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if _, err := Open(ctx, Options{URL: "nats://127.0.0.1:1"}); err == nil || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Errorf("Open with an unreachable URL error = %v, want one naming the URL", err)
	}
}

// listeningInodes returns the socket inodes of this process's TCP sockets
// in the LISTEN state, read from /proc: the ports a firewall audit would see.
func listeningInodes(t *testing.T) map[string]bool {
	t.Helper()
	mine := map[string]bool{}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc on this system: %v", err)
	}
	for _, fd := range fds {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name()))
		if err == nil && strings.HasPrefix(target, "socket:[") {
			mine[strings.TrimSuffix(strings.TrimPrefix(target, "socket:["), "]")] = true
		}
	}
	listening := map[string]bool{}
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(table)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			// sl local rem st tx:rx tr:when retrnsmt uid timeout inode
			if len(fields) > 9 && fields[3] == "0A" && mine[fields[9]] {
				listening[fields[0]+" "+fields[1]+" inode "+fields[9]] = true
			}
		}
		f.Close()
	}
	return listening
}

func TestOpenListensOnNoPort(t *testing.T) {
	// The probe must see a listener when there is one.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if n := len(listeningInodes(t)); n == 0 {
		ln.Close()
		t.Fatalf("probe does not see this test's own listener on %s", ln.Addr())
	}
	ln.Close()

	before := listeningInodes(t)
	s := openStore(t, t.TempDir())
	if err := s.CreateToken(t.Context(), newToken("x")); err != nil {
		t.Fatal(err)
	}
	after := listeningInodes(t)
	for sock := range after {
		if !before[sock] {
			t.Errorf("the embedded store opened a listening socket: %s", sock)
		}
	}
	if s.srv.ClusterAddr() != nil || s.srv.MonitorAddr() != nil {
		t.Errorf("embedded NATS has a cluster or monitor address")
	}
}

// TestSharedExternalNATS: two edges on one external NATS server see the same
// tokens, and a token raced from both is still redeemed exactly once.
func TestSharedExternalNATS(t *testing.T) {
	url := storetest.StartNATS(t)
	var stores []*JetStream
	for range 2 {
		s, err := Open(t.Context(), Options{URL: url, Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		stores = append(stores, s)
	}
	if err := stores[0].CreateToken(t.Context(), newToken("shared")); err != nil {
		t.Fatal(err)
	}
	if err := stores[1].CreateToken(t.Context(), newToken("shared")); !errors.Is(err, ErrExists) {
		t.Fatalf("second edge re-created the token: error = %v, want ErrExists", err)
	}
	for round := range 3 {
		id := fmt.Sprintf("shared%d", round)
		if err := stores[1].CreateToken(t.Context(), newToken(id)); err != nil {
			t.Fatal(err)
		}
		consumeRace(t, stores, id, 20)
	}
}

// BenchmarkOpenClose measures starting and stopping the embedded server on a
// fresh data directory, the cost each test edge pays.
func BenchmarkOpenClose(b *testing.B) {
	for b.Loop() {
		s, err := Open(context.Background(), Options{Dir: b.TempDir()})
		if err != nil {
			b.Fatal(err)
		}
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkConsumeToken measures one create and one redemption.
func BenchmarkConsumeToken(b *testing.B) {
	s := openStore(b, b.TempDir())
	ctx := context.Background()
	i := 0
	for b.Loop() {
		id := fmt.Sprintf("t%d", i)
		i++
		if err := s.CreateToken(ctx, newToken(id)); err != nil {
			b.Fatal(err)
		}
		if _, err := s.ConsumeToken(ctx, id, refuseUsed, "c", time.Now()); err != nil {
			b.Fatal(err)
		}
	}
}

// TestServerLogsStayQuiet: the embedded server's start-up chatter reaches the
// edge's log at debug level only.
func TestServerLogsStayQuiet(t *testing.T) {
	for _, level := range []slog.Level{slog.LevelInfo, slog.LevelDebug} {
		var out logbuf.Buffer
		log := slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: level}))
		s, err := Open(t.Context(), Options{Dir: t.TempDir(), Logger: log})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		got := out.String()
		switch level {
		case slog.LevelInfo:
			if got != "" {
				t.Errorf("at info level the store logged:\n%s", got)
			}
		case slog.LevelDebug:
			if !strings.Contains(got, "level=DEBUG") || !strings.Contains(got, "component=nats") || !strings.Contains(got, "JetStream") {
				t.Errorf("at debug level the server's start-up is not logged as component=nats:\n%s", got)
			}
		}
	}
}

// The embedded server takes the name it is given (an edge gives its id, so
// that edges can tell each other apart in a cluster), or a default.
func TestEmbeddedServerName(t *testing.T) {
	for name, want := range map[string]string{"sallyport-edge-1a2b": "sallyport-edge-1a2b", "": "sallyport-edge"} {
		s, err := Open(t.Context(), Options{Dir: t.TempDir(), Name: name})
		if err != nil {
			t.Fatal(err)
		}
		if got := s.srv.Name(); got != want {
			t.Errorf("Options.Name %q: server name %q, want %q", name, got, want)
		}
		s.Close()
	}
}
