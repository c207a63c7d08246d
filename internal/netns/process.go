//go:build linux

package netns

import (
	"bytes"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Log collects a process's output, line by line, for tests that assert
// what an operator would read. It is safe for concurrent use.
type Log struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (l *Log) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// String returns everything written so far.
func (l *Log) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// Lines returns the lines that contain every one of subs.
func (l *Log) Lines(subs ...string) []string { return l.LinesSince(0, subs...) }

// Mark returns a position in the log: LinesSince(Mark(), ...) sees only
// lines written after it.
func (l *Log) Mark() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Len()
}

// LinesSince returns the lines after mark that contain every one of subs.
func (l *Log) LinesSince(mark int, subs ...string) []string {
	l.mu.Lock()
	text := string(l.buf.Bytes()[mark:])
	l.mu.Unlock()
	var out []string
	for _, line := range strings.Split(text, "\n") {
		if line != "" && containsAll(line, subs) {
			out = append(out, line)
		}
	}
	return out
}

// Count returns how many lines contain every one of subs.
func (l *Log) Count(subs ...string) int { return len(l.Lines(subs...)) }

// WaitFor waits until at least n lines contain every one of subs and
// returns how long that took, or fails the test after timeout.
func (l *Log) WaitFor(t testing.TB, timeout time.Duration, n int, subs ...string) time.Duration {
	t.Helper()
	return l.WaitForSince(t, 0, timeout, n, subs...)
}

// WaitForSince is WaitFor counting only the lines after mark.
func (l *Log) WaitForSince(t testing.TB, mark int, timeout time.Duration, n int, subs ...string) time.Duration {
	t.Helper()
	start := time.Now()
	for len(l.LinesSince(mark, subs...)) < n {
		if time.Since(start) > timeout {
			t.Fatalf("fewer than %d log lines containing %q within %s; log:\n%s", n, subs, timeout, l.Tail(60))
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

// Tail returns the last n lines.
func (l *Log) Tail(n int) string {
	lines := strings.Split(strings.TrimRight(l.String(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Field returns the text of key=value as slog's text handler writes it,
// for matching one field exactly: Field("remote", "1.2.3.4:5") matches
// "remote=1.2.3.4:5 " and a line ending with it, not "remote=1.2.3.4:56".
func Field(key, value string) string { return key + "=" + value + " " }

func containsAll(line string, subs []string) bool {
	for _, s := range subs {
		if !strings.Contains(line, s) && !(strings.HasSuffix(s, " ") && strings.HasSuffix(line, strings.TrimSuffix(s, " "))) {
			return false
		}
	}
	return true
}

// Process is a long-running program that the test started in a namespace.
// Its methods are safe for concurrent use.
type Process struct {
	Name string // what the test calls it, for messages
	Log  *Log   // its standard output and standard error
	ns   *Namespace
	argv []string
	cmd  *exec.Cmd
	done chan struct{}
	err  error // how it ended; set before done is closed
}

// Start runs argv in the namespace until the test ends, collecting its
// output. The test's cleanup kills it by pid (SIGKILL) and waits for it;
// if the test failed, the end of its output goes to the test log.
func (n *Namespace) Start(t testing.TB, name string, argv ...string) *Process {
	t.Helper()
	p := &Process{Name: name, Log: &Log{}, ns: n, argv: argv, done: make(chan struct{})}
	p.cmd = exec.Command("ip", append([]string{"netns", "exec", n.Name}, argv...)...)
	p.cmd.Stdout, p.cmd.Stderr = p.Log, p.Log
	p.cmd.WaitDelay = 2 * time.Second
	// If the test process dies without its cleanup (a panic on timeout),
	// the kernel kills the program too; `ip netns exec` keeps this across
	// its exec.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s in %s: %v", name, n.Role, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Kill()
		if err := p.Wait(5 * time.Second); stillRunning(err) {
			t.Errorf("%s (pid %d) still running 5s after SIGKILL", name, p.Pid())
		}
		if t.Failed() {
			t.Logf("--- %s in %s (pid %d), last lines:\n%s", name, n.Role, p.Pid(), p.Log.Tail(80))
		}
	})
	return p
}

// Pid is the process id; `ip netns exec` execs the program, so it is the
// program's own pid.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Signal sends sig to the process by pid, unless it has already ended.
func (p *Process) Signal(sig syscall.Signal) error {
	select {
	case <-p.done:
		return nil
	default:
	}
	return syscall.Kill(p.Pid(), sig)
}

// Kill sends SIGKILL (kill -9).
func (p *Process) Kill() { p.Signal(syscall.SIGKILL) }

// Done is closed when the process has ended.
func (p *Process) Done() <-chan struct{} { return p.done }

var errStillRunning = errors.New("still running")

func stillRunning(err error) bool { return errors.Is(err, errStillRunning) }

// Wait waits up to timeout for the process to end and returns how it ended.
func (p *Process) Wait(timeout time.Duration) error {
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		return fmt.Errorf("%s (pid %d): %w after %s", p.Name, p.Pid(), errStillRunning, timeout)
	}
}

// Restart starts the same command again, in a new process with a new log,
// after the old one has ended (it fails the test if the old one has not).
func (p *Process) Restart(t testing.TB) *Process {
	t.Helper()
	if err := p.Wait(5 * time.Second); stillRunning(err) {
		t.Fatal(err)
	}
	return p.ns.Start(t, p.Name, p.argv...)
}
