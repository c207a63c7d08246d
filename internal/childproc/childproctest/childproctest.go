// Package childproctest starts a test's child processes: each with its
// output kept, killed by PID and waited for when the test ends, and its
// standard error logged if the test failed.
//
//	p := childproctest.Start(t, "edge", bin, nil, "edge", "--data", dir)
//	p.Stderr.WaitFor(...)
package childproctest

import (
	"os"
	"os/exec"
	"testing"

	"github.com/sallyport/sallyport/internal/childproc"
	"github.com/sallyport/sallyport/internal/logbuf"
)

// Proc is a process a test started.
type Proc struct {
	*childproc.Process
	Name           string
	Stdout, Stderr logbuf.Buffer
}

// Start runs bin with args, env added to the test's environment; name
// names it in messages. The process is killed (SIGKILL, by PID) and
// waited for when the test ends, whatever the test's outcome.
func Start(t testing.TB, name, bin string, env []string, args ...string) *Proc {
	t.Helper()
	p := &Proc{Name: name}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = &p.Stdout, &p.Stderr
	var err error
	if p.Process, err = childproc.Start(cmd); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("%s (pid %d) %s; stderr:\n%s", name, p.Pid(), p.State(), p.Stderr.String())
		}
	})
	return p
}
