//go:build linux

package netns

import (
	"errors"
	"fmt"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/logbuf"
)

// Process is a long-running program that the test started in a namespace.
// Its methods are safe for concurrent use.
type Process struct {
	Name string         // what the test calls it, for messages
	Log  *logbuf.Buffer // its standard output and standard error
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
	p := &Process{Name: name, Log: &logbuf.Buffer{}, ns: n, argv: argv, done: make(chan struct{})}
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
