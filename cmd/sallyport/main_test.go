// Process-level tests of the sallyport binary: TestMain builds it once, and
// each test runs it as separate processes on loopback, the way an operator
// would, and asserts what the operator sees (exit status, stderr, status
// output, bytes through the edge). Every process a test starts is killed
// by its PID when the test ends, and waited for.
package main_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/childproc"
	"github.com/sallyport/sallyport/internal/childproc/childproctest"
	"github.com/sallyport/sallyport/internal/loopback"
	"go.uber.org/goleak"
)

// testVersion is linked into the binary under test, so that `sallyport
// version` can be checked against something the build set.
const testVersion = "v0.0.0-proctest"

// bin is the path of the binary under test, set by TestMain.
var bin string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "sallyport-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "make a directory for the binary:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	bin = filepath.Join(dir, "sallyport")
	build := exec.Command("go", "build", "-ldflags", "-X main.version="+testVersion, "-o", bin, ".")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build sallyport:", err)
		return 1
	}
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutines left behind:", err)
			return 1
		}
	}
	return code
}

// proc is a sallyport process a test started.
type proc struct{ *childproctest.Proc }

// start runs the binary with args, env added to the test's environment;
// see childproctest.Start.
func start(t *testing.T, name string, env []string, args ...string) *proc {
	t.Helper()
	return &proc{childproctest.Start(t, name, bin, env, args...)}
}

// signal sends sig to the process.
func (p *proc) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := p.Signal(sig); err != nil {
		t.Fatalf("send %v to %s: %v", sig, p.Name, err)
	}
}

// wait waits for the process to exit and returns its exit code; -1 means
// it died of a signal.
func (p *proc) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	if err := p.Wait(timeout); errors.Is(err, childproc.ErrStillRunning) {
		t.Fatalf("%s still running %s after it should have exited; stderr:\n%s", p.Name, timeout, p.Stderr.String())
	}
	return p.ExitCode()
}

// waitLog waits until n lines of stderr contain s, failing the test if the
// process exits or timeout passes first.
func (p *proc) waitLog(t *testing.T, s string, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for p.Stderr.Count(s) < n {
		if p.Exited() && p.Stderr.Count(s) < n {
			t.Fatalf("%s exited (%s) before logging %q; stderr:\n%s", p.Name, p.State(), s, p.Stderr.String())
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d lines containing %q after %s, want %d; stderr:\n%s", p.Name, p.Stderr.Count(s), s, timeout, n, p.Stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sallyport runs a short command (token, status, version, a failing role)
// to its end and returns its exit code, stdout and stderr.
func sallyport(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	return sallyportWithin(t, 30*time.Second, args...)
}

// sallyportWithin is sallyport for a command that may take up to timeout
// (the benchmark).
func sallyportWithin(t *testing.T, timeout time.Duration, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	p := start(t, "sallyport "+strings.Join(args, " "), nil, args...)
	code = p.wait(t, timeout)
	return code, p.Stdout.String(), p.Stderr.String()
}

// mustRun runs a short command that must succeed and returns its stdout.
func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	code, out, errOut := sallyport(t, args...)
	if code != 0 {
		t.Fatalf("sallyport %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// freePort returns a loopback address whose port was free a moment ago.
func freePort(t *testing.T) string { return loopback.FreeAddr(t) }

// payload returns n bytes that are not all alike, so that a reordering or
// a lost chunk shows.
func payload(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/251)
	}
	return b
}

// echoes dials addr as a client, sends data, half-closes and checks that
// exactly data comes back.
func echoes(t *testing.T, addr string, data []byte) {
	t.Helper()
	if err := tryEcho(addr, data); err != nil {
		t.Fatal(err)
	}
}

func tryEcho(addr string, data []byte) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return fmt.Errorf("client dial %s: %w", addr, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		werr <- err
	}()
	got, rerr := io.ReadAll(c)
	if err := <-werr; err != nil {
		return fmt.Errorf("client write to %s: %w", addr, err)
	}
	if rerr != nil {
		return fmt.Errorf("client read from %s after %d bytes: %w", addr, len(got), rerr)
	}
	if !bytes.Equal(got, data) {
		return fmt.Errorf("client at %s got %d bytes back, want the %d sent (first difference at %d)", addr, len(got), len(data), firstDiff(got, data))
	}
	return nil
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// roundTrip writes msg on a live client connection and reads it back.
func roundTrip(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatalf("write on the live connection: %v", err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read on the live connection: %v", err)
	}
	if string(got) != msg {
		t.Fatalf("live connection echoed %q, want %q", got, msg)
	}
}

func portOf(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
