//go:build linux

package netns_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/sallyport/sallyport/internal/netns"
	"go.uber.org/goleak"
)

// suite is what TestMain prepares for every test: the sallyport binary,
// built once, or why the namespace tests cannot run here. It is written by
// TestMain before any test starts and only read afterwards.
var suite struct {
	bin  string
	skip string
}

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	suite.skip = netns.Missing(append([]string{"go"}, netns.BackendTools...)...)
	if suite.skip == "" {
		dir, err := os.MkdirTemp("", "sallyport-netns-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "netns tests: make a directory for the binary:", err)
			return 1
		}
		defer os.RemoveAll(dir)
		suite.bin = filepath.Join(dir, "sallyport")
		// The binary is built the way the tests are: with the race
		// detector when they have it, so a data race in the edge or the
		// connector under real traffic is reported (see checkNoRace).
		args := []string{"build", "-o", suite.bin}
		if raceEnabled {
			args = append(args, "-race")
		}
		args = append(args, "github.com/sallyport/sallyport/cmd/sallyport")
		cmd := exec.Command("go", args...)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "netns tests: build the sallyport binary:", err)
			return 1
		}
	} else if netns.Required() {
		fmt.Fprintln(os.Stderr, "FAIL: CI=true, so the network-namespace tests of internal/netns must run, "+
			"but they cannot: "+suite.skip)
		return 1
	} else {
		fmt.Fprintln(os.Stderr, "NOT RUN: the network-namespace tests of internal/netns need "+
			"root, iproute2, nftables and the packages in .ci/packages.txt: "+suite.skip)
	}
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutines left running:", err)
			code = 1
		}
	}
	return code
}

// newStack builds a whole deployment for t, or skips t loudly (fails it
// under CI=true).
func newStack(t *testing.T, edgeArgs ...string) *netns.Stack {
	t.Helper()
	netns.SkipIfMissing(t, suite.skip)
	s := netns.NewStack(t, suite.bin, edgeArgs...)
	t.Cleanup(func() { checkNoRace(t, s) })
	return s
}

// checkNoRace fails t if a sallyport process reported a data race.
func checkNoRace(t *testing.T, s *netns.Stack) {
	for _, p := range s.Sallyports() {
		if n := p.Log.Count("WARNING: DATA RACE"); n > 0 {
			t.Errorf("%s reported %d data races:\n%s", p.Name, n, p.Log.String())
		}
	}
}
