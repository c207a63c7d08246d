package childproc_test

import (
	"errors"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/childproc"
	"github.com/sallyport/sallyport/internal/logbuf"
)

// childEnv makes the test binary act as a child: "exit3" exits with status
// 3 after printing a line, "sleep" runs until a signal ends it.
const childEnv = "CHILDPROC_TEST_CHILD"

func TestMain(m *testing.M) {
	switch os.Getenv(childEnv) {
	case "exit3":
		os.Stdout.WriteString("child ran\n")
		os.Exit(3)
	case "sleep":
		time.Sleep(time.Hour)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func child(t *testing.T, mode string) (*childproc.Process, *logbuf.Buffer) {
	t.Helper()
	var out logbuf.Buffer
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), childEnv+"="+mode)
	cmd.Stdout, cmd.Stderr = &out, &out
	p, err := childproc.Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Kill)
	return p, &out
}

func TestExitStatusAndOutput(t *testing.T) {
	p, out := child(t, "exit3")
	err := p.Wait(30 * time.Second)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || p.ExitCode() != 3 || !p.Exited() {
		t.Errorf("Wait = %v, exit code %d, exited %v; want exit status 3", err, p.ExitCode(), p.Exited())
	}
	// Done means the output is all copied.
	if got := out.String(); got != "child ran\n" {
		t.Errorf("output %q, want %q", got, "child ran\n")
	}
}

func TestWaitReportsARunningChild(t *testing.T) {
	p, _ := child(t, "sleep")
	if err := p.Wait(50 * time.Millisecond); !errors.Is(err, childproc.ErrStillRunning) {
		t.Errorf("Wait on a sleeping child = %v, want ErrStillRunning", err)
	}
	if p.Exited() || p.State() != "still running" || p.ExitCode() != -1 {
		t.Errorf("a sleeping child: exited %v, state %q, exit code %d", p.Exited(), p.State(), p.ExitCode())
	}
	p.Kill()
	if !p.Exited() || !strings.Contains(p.State(), "killed") {
		t.Errorf("after Kill: exited %v, state %q; want killed", p.Exited(), p.State())
	}
	p.Kill() // a second Kill, and a signal to an ended child, do nothing
	if err := p.Signal(os.Interrupt); err != nil {
		t.Errorf("Signal after the end: %v", err)
	}
}

func TestStopAsksFirst(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no SIGTERM")
	}
	p, _ := child(t, "sleep")
	start := time.Now()
	p.Stop(time.Minute)
	// SIGTERM's default action ends the child: Stop returns at once, and the
	// state names the signal it asked with, not SIGKILL.
	if !strings.Contains(p.State(), "terminated") || time.Since(start) > 30*time.Second {
		t.Errorf("after Stop: state %q after %s; want terminated, well before the grace", p.State(), time.Since(start))
	}
}
