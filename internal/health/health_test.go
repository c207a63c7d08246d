package health

import (
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// serve serves h on a loopback listener until the test ends and returns
// its base URL.
func serve(t *testing.T, h http.Handler) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(l) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return "http://" + l.Addr().String()
}

// Probe says ok for 200, and the first line of the reason (bounded) for
// anything else; the handler says the reason its ready func gives.
func TestProbe(t *testing.T) {
	var reason error
	base := serve(t, Handler(func() error { return reason }))
	hc := &http.Client{}
	defer hc.CloseIdleConnections()
	if err := Probe(t.Context(), hc, base+ReadyPath, 0); err != nil {
		t.Fatalf("ready: %v", err)
	}
	reason = fmt.Errorf("draining")
	if err := Probe(t.Context(), hc, base+ReadyPath, 0); err == nil || err.Error() != "draining (503)" {
		t.Fatalf("not ready: %v, want draining (503)", err)
	}
	if err := Probe(t.Context(), hc, base+LivePath, 0); err != nil {
		t.Fatalf("live while not ready: %v", err)
	}
	if err := Probe(t.Context(), hc, base+"/v1/status", 0); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("another path: %v, want a 404", err)
	}

	// A hostile server's reply is cut to one short line.
	hostile := serve(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprint(w, strings.Repeat("x", 4096)+"\nsecond line")
	}))
	err := Probe(t.Context(), hc, hostile+ReadyPath, 0)
	if err == nil || len(err.Error()) > maxReply+16 || strings.Contains(err.Error(), "second") {
		t.Fatalf("hostile reply: %d bytes: %.80v", len(err.Error()), err)
	}

	// Nothing listening: unreachable, quickly.
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	if err := Probe(t.Context(), hc, "http://"+addr+ReadyPath, time.Second); err == nil || !strings.HasPrefix(err.Error(), "unreachable: ") {
		t.Fatalf("nothing listening: %v", err)
	}
}

// Notify sends one datagram with the state to $NOTIFY_SOCKET, a path or
// an abstract name (@…), read here by a socket playing systemd; without
// the variable it sends nothing and succeeds.
func TestNotify(t *testing.T) {
	for _, name := range []string{filepath.Join(t.TempDir(), "notify"), fmt.Sprintf("@sallyport-test-%d", time.Now().UnixNano())} {
		sd, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
		if err != nil {
			t.Fatal(err)
		}
		t.Setenv("NOTIFY_SOCKET", name)
		for _, state := range []string{"READY=1", "STOPPING=1"} {
			if err := Notify(state); err != nil {
				t.Fatalf("notify %s at %s: %v", state, name, err)
			}
			sd.SetReadDeadline(time.Now().Add(5 * time.Second))
			b := make([]byte, 64)
			n, err := sd.Read(b)
			if err != nil || string(b[:n]) != state {
				t.Fatalf("systemd at %s read %q, %v; want %q", name, b[:n], err, state)
			}
		}
		sd.Close()
	}
	t.Setenv("NOTIFY_SOCKET", "")
	if err := Notify("READY=1"); err != nil {
		t.Fatalf("without NOTIFY_SOCKET: %v", err)
	}
	t.Setenv("NOTIFY_SOCKET", "relative/path")
	if err := Notify("READY=1"); err == nil || !strings.Contains(err.Error(), "NOTIFY_SOCKET") {
		t.Fatalf("a relative NOTIFY_SOCKET: %v", err)
	}
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "gone"))
	if err := Notify("READY=1"); err == nil {
		t.Fatal("a NOTIFY_SOCKET where nothing listens: no error")
	}
}
