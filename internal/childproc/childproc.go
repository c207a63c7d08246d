// Package childproc runs a child process that does not outlive its parent
// and tells when it has ended: sallyport's benchmark and the process-level
// tests start the edge, the connector and back-ends with it.
//
//	cmd := exec.Command(exe, "edge", "--data", dir)
//	cmd.Stdout, cmd.Stderr = &logs, &logs
//	p, err := childproc.Start(cmd)
//	...
//	p.Kill() // SIGKILL by pid, then waits
package childproc

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"time"
)

// ErrStillRunning is returned by Wait when the process outlives the timeout.
var ErrStillRunning = errors.New("still running")

// Process is a started child. Its methods are safe for concurrent use.
type Process struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error // how it ended (cmd.Wait's result); set before done is closed
}

// Start starts cmd. On Linux the kernel kills the child (SIGKILL) should
// the parent die without stopping it, unless cmd.SysProcAttr is already
// set. A goroutine owned by the Process waits for the child and ends with
// it; the caller ends it by Kill or Stop, or by the child exiting.
func Start(cmd *exec.Cmd) (*Process, error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = dieWithParent()
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &Process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Pid is the child's process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the child has ended and its output is copied.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the child has ended.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Signal sends sig to the child, unless it has already ended.
func (p *Process) Signal(sig os.Signal) error {
	if p.Exited() {
		return nil
	}
	return p.cmd.Process.Signal(sig)
}

// Kill sends SIGKILL to the child, unless it has ended, and waits for it.
func (p *Process) Kill() {
	p.Signal(os.Kill)
	<-p.done
}

// Stop asks the child to end (SIGTERM; on Windows, where there is none, it
// kills at once), waits up to grace for it, then kills it and waits.
func (p *Process) Stop(grace time.Duration) {
	if err := p.Signal(terminate()); err == nil {
		select {
		case <-p.done:
			return
		case <-time.After(grace):
		}
	}
	p.Kill()
}

// Wait waits up to timeout for the child to end and returns how it ended
// (nil for exit status 0), or an error matching ErrStillRunning.
func (p *Process) Wait(timeout time.Duration) error {
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		return fmt.Errorf("pid %d: %w after %s", p.Pid(), ErrStillRunning, timeout)
	}
}

// ExitCode is the child's exit status once it has ended: -1 if a signal
// ended it, or if it has not ended.
func (p *Process) ExitCode() int {
	if !p.Exited() {
		return -1
	}
	return p.cmd.ProcessState.ExitCode()
}

// State describes how the child ended ("exit status 1", "signal:
// killed"), or says it is still running.
func (p *Process) State() string {
	if !p.Exited() {
		return "still running"
	}
	return p.cmd.ProcessState.String()
}
