package main_test

import (
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

// The CLI talks to the edge over the Unix socket in its data directory
// and nowhere else: not to whatever listens on the admin TCP address while
// the edge is down, and not to a socket that is not the edge's. Each
// impostor must see nothing: the CLI's requests could carry secrets.
func TestCLITalksOnlyToTheEdgesSocket(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "edge")
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatal(err)
	}
	// An impostor on the admin TCP address the edge last used.
	var tcpHits atomic.Int64
	impostor, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer impostor.Close()
	go func() {
		for {
			c, err := impostor.Accept()
			if err != nil {
				return
			}
			tcpHits.Add(1)
			c.Close()
		}
	}()
	os.WriteFile(filepath.Join(data, "admin.addr"), []byte(impostor.Addr().String()+"\n"), 0o600)
	os.WriteFile(filepath.Join(data, "admin.token"), []byte("secret-token\n"), 0o600)

	status := func() string {
		t.Helper()
		code, _, stderr := sallyport(t, "status", "--data", data)
		if code == 0 {
			t.Fatalf("status succeeded against an impostor; stderr:\n%s", stderr)
		}
		return stderr
	}
	if msg := status(); !strings.Contains(msg, "missing: is the edge running") {
		t.Errorf("with no socket: %s; want a message that asks whether the edge runs", msg)
	}

	// Sockets that are not the edge's, served by a server that counts
	// what reaches it.
	var sockHits atomic.Int64
	sock := filepath.Join(data, "admin.sock")
	serve := func(mode os.FileMode) func() {
		os.Remove(sock)
		l, err := net.Listen("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		os.Chmod(sock, mode)
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { sockHits.Add(1) })}
		go srv.Serve(l)
		return func() { srv.Close() }
	}
	stop := serve(0o666)
	if msg := status(); !strings.Contains(msg, "lets other users in") {
		t.Errorf("socket mode 0666: %s; want a refusal that says others may use it", msg)
	}
	stop()
	os.Remove(sock)
	os.WriteFile(sock, nil, 0o600)
	if msg := status(); !strings.Contains(msg, "not a socket") {
		t.Errorf("a plain file as the socket: %s", msg)
	}
	if tcpHits.Load() != 0 || sockHits.Load() != 0 {
		t.Errorf("the impostors were reached: %d TCP connections, %d socket requests", tcpHits.Load(), sockHits.Load())
	}
}
