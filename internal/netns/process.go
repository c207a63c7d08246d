//go:build linux

package netns

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/childproc"
	"github.com/sallyport/sallyport/internal/logbuf"
)

// Process is a long-running program that the test started in a namespace.
// Its methods are safe for concurrent use. Pid is the program's own pid:
// `ip netns exec` execs it.
type Process struct {
	*childproc.Process
	Name string         // what the test calls it, for messages
	Log  *logbuf.Buffer // its standard output and standard error
	ns   *Namespace
	argv []string
}

// Start runs argv in the namespace until the test ends, collecting its
// output. The test's cleanup kills it by pid (SIGKILL) and waits for it;
// if the test failed, the end of its output goes to the test log.
func (n *Namespace) Start(t testing.TB, name string, argv ...string) *Process {
	t.Helper()
	p := &Process{Name: name, Log: &logbuf.Buffer{}, ns: n, argv: argv}
	cmd := exec.Command("ip", append([]string{"netns", "exec", n.Name}, argv...)...)
	cmd.Stdout, cmd.Stderr = p.Log, p.Log
	// A program's own children (sshd's) may hold its output open.
	cmd.WaitDelay = 2 * time.Second
	// childproc has the kernel kill the program should the test process
	// die without its cleanup (a panic on timeout); `ip netns exec` keeps
	// this across its exec.
	var err error
	if p.Process, err = childproc.Start(cmd); err != nil {
		t.Fatalf("start %s in %s: %v", name, n.Role, err)
	}
	t.Cleanup(func() {
		p.Signal(syscall.SIGKILL)
		if err := p.Wait(5 * time.Second); errors.Is(err, childproc.ErrStillRunning) {
			t.Errorf("%s (pid %d) still running 5s after SIGKILL", name, p.Pid())
		}
		if t.Failed() {
			t.Logf("--- %s in %s (pid %d), last lines:\n%s", name, n.Role, p.Pid(), p.Log.Tail(80))
			// The whole log, for a failure the last lines do not explain.
			if dir := os.Getenv("SALLYPORT_NETNS_LOGS"); dir != "" {
				path := filepath.Join(dir, fmt.Sprintf("%s-%s-%d.log", t.Name(), name, p.Pid()))
				os.MkdirAll(filepath.Dir(path), 0o700)
				if err := os.WriteFile(path, []byte(p.Log.String()), 0o600); err == nil {
					t.Logf("--- %s's whole log: %s", name, path)
				}
			}
		}
	})
	return p
}

// waitEnded fails t if p has not ended within 5 s.
func (p *Process) waitEnded(t testing.TB) {
	t.Helper()
	p.waitEndedWithin(t, 5*time.Second)
}

// waitEndedWithin fails t if p has not ended within d.
func (p *Process) waitEndedWithin(t testing.TB, d time.Duration) {
	t.Helper()
	if err := p.Wait(d); errors.Is(err, childproc.ErrStillRunning) {
		t.Fatalf("%s: %v", p.Name, err)
	}
}

// Restart starts the same command again, in a new process with a new log,
// after the old one has ended (it fails the test if the old one has not).
func (p *Process) Restart(t testing.TB) *Process {
	t.Helper()
	p.waitEnded(t)
	return p.ns.Start(t, p.Name, p.argv...)
}
