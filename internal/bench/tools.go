package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/sallyport/sallyport/internal/bench/traffic"
)

// The load comes from the tools users measure with, where installed:
// iperf3 for bulk (its server is then the bulk back-end) and wrk for
// small HTTP requests. Without them the benchmark uses its own Go load
// generators (load.go), which share this process's cores with nothing it
// measures but are not what users run; the report says which it used.

// tools are the external load generators found on this machine.
type tools struct {
	iperf3, wrk string // paths; empty where not installed
	// iperfSrv is the iperf3 server, once started.
	iperfSrv *iperf3Server
}

func findTools() tools {
	var t tools
	t.iperf3, _ = exec.LookPath("iperf3")
	t.wrk, _ = exec.LookPath("wrk")
	return t
}

// describe says which load generators a run used, for the report.
func (t tools) describe() string {
	bulk, req := "own Go generator (iperf3 not installed)", "own Go generator (wrk not installed)"
	if t.iperf3 != "" {
		bulk = "iperf3 " + toolVersion(t.iperf3, "--version")
	}
	if t.wrk != "" {
		req = "wrk " + toolVersion(t.wrk, "--version")
	}
	return "bulk: " + bulk + "; requests: " + req
}

// toolVersion returns the version word of a tool's version line.
func toolVersion(bin, flag string) string {
	// wrk prints its usage after the version and exits 1: ignore the status.
	out, _ := exec.Command(bin, flag).CombinedOutput()
	line, _, _ := strings.Cut(string(out), "\n")
	if f := strings.Fields(line); len(f) >= 2 {
		return f[1]
	}
	return "(unknown version)"
}

// iperf3Server is the iperf3 server, the bulk back-end. It serves one
// test at a time, and is busy until it has finished the last one: its
// log says when it is ready for the next.
type iperf3Server struct {
	*proc
	addr  string
	tests int // tests run so far
}

func startIperf3Server(h *host, bin, dir string) (*iperf3Server, error) {
	ports, err := h.ports(1)
	if err != nil {
		return nil, err
	}
	// --forceflush: the log is read to know when the server is ready.
	p, err := startProcOn(h, bin, dir, "iperf3-server", nil, "--server", "--bind", h.addr, "--port", strconv.Itoa(ports[0]), "--forceflush")
	if err != nil {
		return nil, err
	}
	return &iperf3Server{proc: p, addr: net.JoinHostPort(h.addr, strconv.Itoa(ports[0]))}, nil
}

// ready waits until the server listens for its next test.
func (s *iperf3Server) ready(ctx context.Context) error {
	want := fmt.Sprintf("(test #%d)", s.tests+1)
	deadline := time.Now().Add(traffic.IOTimeout)
	for !strings.Contains(s.tail(), want) {
		if s.Exited() {
			return fmt.Errorf("the iperf3 server exited; its log:\n%s", s.tail())
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return firstErr(ctx.Err(), fmt.Errorf("the iperf3 server is not ready for test %d after %s; its log:\n%s", s.tests+1, traffic.IOTimeout, s.tail()))
		}
		time.Sleep(10 * time.Millisecond)
	}
	s.tests++
	return nil
}

// iperf3Bulk runs one iperf3 test from h to addr: streams parallel
// streams for secs seconds after omit seconds not counted (TCP's slow
// start on a long link), client → server, or server → client with
// reverse. It returns what the receiver counted.
func iperf3Bulk(ctx context.Context, h *host, bin string, srv *iperf3Server, addr string, streams, secs, omit int, reverse bool) (traffic.Bulk, error) {
	if err := srv.ready(ctx); err != nil {
		return traffic.Bulk{}, err
	}
	host, port, ok := strings.Cut(addr, ":")
	if !ok {
		return traffic.Bulk{}, fmt.Errorf("iperf3: bad address %q", addr)
	}
	args := []string{"--client", host, "--port", port, "--time", strconv.Itoa(secs), "--parallel", strconv.Itoa(streams),
		"--json", "--connect-timeout", "10000"}
	if omit > 0 {
		args = append(args, "--omit", strconv.Itoa(omit))
	}
	if reverse {
		args = append(args, "--reverse")
	}
	// A stalled test fails instead of hanging the benchmark.
	ctx, cancel := context.WithTimeout(ctx, time.Duration(secs+omit)*time.Second+traffic.IOTimeout)
	defer cancel()
	out, err := h.command(ctx, append([]string{bin}, args...)...).Output()
	var res struct {
		Error string `json:"error"`
		End   struct {
			SumReceived struct {
				Bytes   int64   `json:"bytes"`
				Seconds float64 `json:"seconds"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if jerr := json.Unmarshal(out, &res); jerr != nil {
		if err == nil {
			err = jerr
		}
		return traffic.Bulk{}, fmt.Errorf("iperf3 %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	if res.Error != "" {
		return traffic.Bulk{}, fmt.Errorf("iperf3 to %s: %s", addr, res.Error)
	}
	if err != nil {
		return traffic.Bulk{}, fmt.Errorf("iperf3 to %s: %w", addr, err)
	}
	r := res.End.SumReceived
	if r.Bytes <= 0 || r.Seconds <= 0 {
		return traffic.Bulk{}, fmt.Errorf("iperf3 to %s: the receiver counted %d bytes in %.2fs", addr, r.Bytes, r.Seconds)
	}
	return traffic.Bulk{Bytes: r.Bytes, Elapsed: time.Duration(r.Seconds * float64(time.Second))}, nil
}

// wrkRequests runs wrk against the http back-end at addr: conns
// connections over two threads for secs seconds, each request on a new
// connection with closeEach. Any socket error or non-2xx answer fails the
// run: every request must have been carried.
func wrkRequests(ctx context.Context, bin, addr string, conns, secs int, closeEach bool) (traffic.Requests, error) {
	args := []string{"--threads", "2", "--connections", strconv.Itoa(conns), "--duration", strconv.Itoa(secs) + "s",
		"--timeout", "10s", "--latency"}
	if closeEach {
		args = append(args, "--header", "Connection: close")
	}
	args = append(args, "http://"+addr+"/")
	ctx, cancel := context.WithTimeout(ctx, time.Duration(secs)*time.Second+traffic.IOTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	if err != nil {
		return traffic.Requests{}, fmt.Errorf("wrk %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	r, err := parseWrk(string(out))
	if err != nil {
		return traffic.Requests{}, fmt.Errorf("wrk %s: %w; its output:\n%s", strings.Join(args, " "), err, out)
	}
	return r, nil
}

var (
	wrkCount   = regexp.MustCompile(`(?m)^\s*(\d+) requests in `)
	wrkRate    = regexp.MustCompile(`(?m)^Requests/sec:\s+([0-9.]+)`)
	wrkPct     = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([0-9.]+)(us|ms|s)\s*$`)
	wrkErrors  = regexp.MustCompile(`(?m)^\s*Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
	wrkNon2xx  = regexp.MustCompile(`(?m)^\s*Non-2xx or 3xx responses: (\d+)`)
	wrkUnitDur = map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second}
)

// parseWrk reads wrk's summary (with --latency): the request count and
// rate, and the 50th and 99th latency percentiles. It refuses a run with
// socket errors or non-2xx answers.
func parseWrk(out string) (traffic.Requests, error) {
	var r traffic.Requests
	m := wrkCount.FindStringSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("no request count")
	}
	r.Count, _ = strconv.ParseInt(m[1], 10, 64)
	if m = wrkRate.FindStringSubmatch(out); m == nil {
		return r, fmt.Errorf("no Requests/sec line")
	}
	r.Rate, _ = strconv.ParseFloat(m[1], 64)
	for _, p := range wrkPct.FindAllStringSubmatch(out, -1) {
		v, _ := strconv.ParseFloat(p[2], 64)
		d := time.Duration(v * float64(wrkUnitDur[p[3]]))
		if p[1] == "50" {
			r.P50 = d
		} else {
			r.P99 = d
		}
	}
	if r.P50 == 0 || r.P99 == 0 {
		return r, fmt.Errorf("no latency distribution (50%% and 99%%)")
	}
	if m = wrkErrors.FindStringSubmatch(out); m != nil {
		return r, fmt.Errorf("socket errors: connect %s, read %s, write %s, timeout %s", m[1], m[2], m[3], m[4])
	}
	if m = wrkNon2xx.FindStringSubmatch(out); m != nil {
		return r, fmt.Errorf("%s answers were not 2xx", m[1])
	}
	if r.Count == 0 {
		return r, fmt.Errorf("no requests completed")
	}
	return r, nil
}
