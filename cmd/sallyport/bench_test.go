package main_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/wanlink"
)

// The shipped benchmark's quick mode runs end to end: edge and connector
// come up as processes, every phase carries its bytes through the tunnel,
// directly and (where OpenSSH is installed, as in CI) through ssh -R, with
// iperf3 and wrk where they are installed, and every idle connection still
// carries a byte. It checks that the run completed and what it carried,
// never a speed.
func TestBenchQuick(t *testing.T) {
	out := filepath.Join(t.TempDir(), "bench.json")
	args := []string{"bench", "--quick", "--idle", "100,300", "--json", out}
	_, sshdErr := exec.LookPath("/usr/sbin/sshd")
	_, sshErr := exec.LookPath("ssh")
	compare := sshdErr == nil && sshErr == nil
	if compare {
		args = append(args, "--compare", "ssh")
	}
	code, stdout, stderr := sallyportWithin(t, 3*time.Minute, args...)
	if code != 0 {
		t.Fatalf("sallyport bench --quick: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	for _, want := range []string{"bulk, 1 stream", "new connection per request", "per idle connection", "carried through sallyport and checked"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("the table lacks %q:\n%s", want, stdout)
		}
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatalf("--json wrote no report: %v", err)
	}
	var rep struct {
		Tools string
		Paths []string
		Rows  []struct {
			Key       string
			Direct    float64
			Sallyport float64
			SSH       float64
		}
		TunneledBytes int64 `json:"tunneled_bytes"`
		Idle          []struct {
			Conns, Carried int
		}
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("the JSON report does not parse: %v\n%s", err, b)
	}
	if len(rep.Rows) != 12 {
		t.Errorf("the report has %d rows, want 12 (bulk ×4, kept-alive ×4, new connection ×4):\n%s", len(rep.Rows), b)
	}
	for _, r := range rep.Rows {
		// A direct connection has no processes whose CPU is counted.
		if (r.Direct <= 0 && !strings.HasSuffix(r.Key, "_cpu")) || r.Sallyport <= 0 || (compare && r.SSH <= 0) {
			t.Errorf("row %s: direct %v, sallyport %v, ssh %v: a phase measured nothing", r.Key, r.Direct, r.Sallyport, r.SSH)
		}
	}
	if compare && !slices.Equal(rep.Paths, []string{"direct", "sallyport", "ssh"}) {
		t.Errorf("paths %v, want direct, sallyport and ssh", rep.Paths)
	}
	// The report says which load generators it used, and uses the
	// installed ones.
	for tool, phase := range map[string]string{"iperf3": "bulk", "wrk": "requests"} {
		_, err := exec.LookPath(tool)
		if installed, used := err == nil, strings.Contains(rep.Tools, phase+": "+tool); installed != used {
			t.Errorf("%s installed: %v, but the report's load says %q", tool, installed, rep.Tools)
		}
	}
	if rep.TunneledBytes < 1<<20 {
		t.Errorf("%d bytes carried through sallyport, want at least 1 MiB", rep.TunneledBytes)
	}
	if len(rep.Idle) != 2 {
		t.Fatalf("%d idle levels reported, want 2 (100 and 300)", len(rep.Idle))
	}
	for _, l := range rep.Idle {
		if l.Carried != l.Conns {
			t.Errorf("%d of %d idle connections carried a byte after being held", l.Carried, l.Conns)
		}
	}
}

// The WAN mode runs end to end across the emulated link (root): every
// phase carries its bytes directly and through sallyport, and the link
// and its namespaces are gone afterwards. It checks what ran and what was
// carried, never a speed.
func TestBenchWANQuick(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("bench --wan needs root, and CI runs as root")
		}
		t.Skip("bench --wan needs root")
	}
	out := filepath.Join(t.TempDir(), "bench.json")
	p := start(t, "sallyport bench --wan", nil, "bench", "--wan", "20ms,0%,200mbit", "--quick", "--json", out)
	code := p.wait(t, 3*time.Minute)
	stdout, stderr := p.Stdout.String(), p.Stderr.String()
	if code != 0 {
		t.Fatalf("sallyport bench --wan --quick: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatalf("--json wrote no report: %v", err)
	}
	var rep struct {
		WAN  string
		Rows []struct {
			Key       string
			Direct    float64
			Sallyport float64
		}
		TunneledBytes int64 `json:"tunneled_bytes"`
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("the JSON report does not parse: %v\n%s", err, b)
	}
	if rep.WAN != "20ms,200mbit" {
		t.Errorf("the report's link is %q, want 20ms,200mbit", rep.WAN)
	}
	keys := map[string]bool{}
	for _, r := range rep.Rows {
		keys[r.Key] = true
		if r.Direct <= 0 || r.Sallyport <= 0 {
			t.Errorf("row %s: direct %v, sallyport %v: a phase measured nothing", r.Key, r.Direct, r.Sallyport)
		}
	}
	for _, k := range []string{"wan_1_up", "wan_1_down", "wan_8_up", "wan_8_down", "wan_ttfb"} {
		if !keys[k] {
			t.Errorf("the report lacks row %s", k)
		}
	}
	if rep.TunneledBytes < 1<<20 {
		t.Errorf("%d bytes carried through sallyport, want at least 1 MiB", rep.TunneledBytes)
	}
	// Its own namespaces only (named after its PID): another bench may
	// run beside the test.
	own := fmt.Sprintf("%s%d-", wanlink.NamePrefix, p.Pid())
	if out, err := exec.Command("ip", "netns", "list").Output(); err == nil && strings.Contains(string(out), own) {
		t.Errorf("the run left namespaces behind (%s*):\n%s", own, out)
	}
}
