package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sallyport/sallyport/internal/childproc"
)

// proc is one process the benchmark started: the edge, the connector or
// the idle connections' back-end. Its output goes to a log file in the
// run's directory.
type proc struct {
	*childproc.Process
	name string
	log  string
	// gentle: stop with SIGTERM before SIGKILL.
	gentle bool
}

// A host is where a process of the run lives: this machine's own network
// (loopback), or one side of an emulated WAN link (wan.go).
type host struct {
	// addr is the address its processes bind: 127.0.0.1, or the side's
	// address.
	addr string
	// command makes a command that runs there; ctx ends it.
	command func(ctx context.Context, argv ...string) *exec.Cmd
	// dial connects from there.
	dial func(ctx context.Context, addr string) (net.Conn, error)
	// ports returns n ports free on addr.
	ports func(n int) ([]int, error)
}

// local is this machine's loopback.
var local = &host{
	addr: "127.0.0.1",
	command: func(ctx context.Context, argv ...string) *exec.Cmd {
		return exec.CommandContext(ctx, argv[0], argv[1:]...)
	},
	dial: func(ctx context.Context, addr string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	},
	ports: freePorts,
}

// dialTimeout dials addr from h within timeout.
func (h *host) dialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return h.dial(ctx, addr)
}

// startProc runs exe with args on this machine; stdout and stderr go to
// dir/name.log. The child is killed (SIGKILL) should the benchmark die
// without its cleanup running.
func startProc(exe, dir, name string, args ...string) (*proc, error) {
	return startProcOn(local, exe, dir, name, nil, args...)
}

// startProcOn is startProc on h, with env added to the child's
// environment. A child given an environment is stopped with SIGTERM
// first (see stop), so that it can write its profiles.
func startProcOn(h *host, exe, dir, name string, env []string, args ...string) (*proc, error) {
	logPath := filepath.Join(dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	// The child writes the log through its own descriptor; ours is not
	// needed once it has started.
	defer f.Close()
	// The process lives until stopped, not until a context ends.
	cmd := h.command(context.Background(), append([]string{exe}, args...)...)
	cmd.Stdout, cmd.Stderr = f, f
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	cp, err := childproc.Start(cmd)
	if err != nil {
		return nil, fmt.Errorf("start %s (%s): %w", name, exe, err)
	}
	return &proc{Process: cp, name: name, log: logPath, gentle: env != nil}, nil
}

// stop kills the process by its PID and waits for it. A gentle process
// gets SIGTERM and up to 10 s to exit first.
func (p *proc) stop() {
	if p.gentle {
		p.Stop(10 * time.Second)
		return
	}
	p.Kill()
}

// tail returns the end of the process's log, for error messages.
func (p *proc) tail() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return strings.TrimSpace(string(b))
}

// startBackendProc runs exe as the back-end process (see ServeBackends)
// serving specs (kind=addr) and returns the addresses it bound, in
// order. The back-ends run in their own process so that what they cost
// is neither the load generators' nor the measured processes', and so
// that the benchmark's open-file limit holds only the clients.
func startBackendProc(h *host, exe, dir string, specs []string) (*proc, []string, error) {
	p, err := startProcOn(h, exe, dir, "backend", nil, "bench", "--serve-backends", strings.Join(specs, ","))
	if err != nil {
		return nil, nil, err
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) && !p.Exited() {
		b, _ := os.ReadFile(p.log)
		if line, _, ok := strings.Cut(string(b), "\n"); ok {
			if rest, ok := strings.CutPrefix(line, "listening "); ok {
				var bound []string
				for _, f := range strings.Fields(rest) {
					_, addr, _ := strings.Cut(f, "=")
					bound = append(bound, addr)
				}
				if len(bound) == len(specs) {
					return p, bound, nil
				}
			}
			p.stop()
			return nil, nil, fmt.Errorf("start the bench back-ends: %s", strings.TrimSpace(string(b)))
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.stop()
	return nil, nil, fmt.Errorf("start the bench back-ends: no addresses within 10s; its output:\n%s", p.tail())
}

// rss returns the process's resident set size in bytes (VmRSS).
func rss(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("read RSS of pid %d: %w", pid, err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) < 1 {
				break
			}
			kb, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				break
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("read RSS of pid %d: no VmRSS line in /proc/%d/status", pid, pid)
}

// clockTick is USER_HZ, the unit of /proc/PID/stat's CPU times; it is
// 100 on every Linux platform Go supports.
const clockTick = 100

// cpuSeconds returns the user plus system CPU time the process has used.
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read CPU time of pid %d: %w", pid, err)
	}
	// The command name (field 2) may hold spaces; fields after it are
	// counted from its closing parenthesis.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("read CPU time of pid %d: bad /proc/%d/stat", pid, pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime is field 14, stime field 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("read CPU time of pid %d: short /proc/%d/stat", pid, pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("read CPU time of pid %d: %w", pid, err)
	}
	return float64(ut+st) / clockTick, nil
}

// freePorts returns n distinct free TCP ports on 127.0.0.1. They are
// free when returned; the processes that bind them soon after could in
// rare cases find one taken, and the run then fails with a clear error.
func freePorts(n int) ([]int, error) {
	ls := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port on 127.0.0.1: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// sallyport is the edge, the connector and their data directories.
type sallyport struct {
	exe, dir  string
	edge      *proc
	connector *proc
	// client is where the clients are: beside the edge.
	client *host
	// public maps each service to the edge's client address for it.
	public map[string]string
}

// startSallyport starts the edge on edge, exposing each of services on
// its own port, enrolls a connector that offers each at backends[name],
// starts it on site and waits until a round trip on probe passes through
// the tunnel from a client beside the edge.
//
// With profile set, edge and connector write CPU and heap profiles there
// (edge.cpu, edge.heap, connector.cpu, connector.heap) when stopped.
func startSallyport(ctx context.Context, edge, site *host, exe, dir, profile string, backends map[string]string, probe string) (*sallyport, error) {
	names := make([]string, 0, len(backends))
	for n := range backends {
		names = append(names, n)
	}
	ports, err := edge.ports(2 + len(names))
	if err != nil {
		return nil, err
	}
	s := &sallyport{exe: exe, dir: dir, public: map[string]string{}, client: edge}
	edgeData, connData := filepath.Join(dir, "edge"), filepath.Join(dir, "connector")
	tunnelAddr := net.JoinHostPort(edge.addr, strconv.Itoa(ports[0]))
	args := []string{"edge", "--data", edgeData, "--tunnel-listen", tunnelAddr, "--advertise", tunnelAddr,
		"--admin-listen", fmt.Sprintf("127.0.0.1:%d", ports[1]), "--log-level", "warn", "--drain-timeout", "1s",
		// The bench holds up to 50,000 idle connections from a few
		// loopback addresses: lift the client limits past that.
		"--max-clients", "200000", "--max-clients-per-source", "200000"}
	for i, n := range names {
		s.public[n] = net.JoinHostPort(edge.addr, strconv.Itoa(ports[2+i]))
		args = append(args, "--expose", n+"="+s.public[n])
	}
	if s.edge, err = startProcOn(edge, exe, dir, "edge", profileEnv(profile, "edge"), args...); err != nil {
		return nil, err
	}
	keyfile := filepath.Join(dir, "bench.keyfile")
	if err := s.createToken(ctx, edgeData, keyfile, names); err != nil {
		s.stop()
		return nil, err
	}
	args = []string{"connector", "--keyfile", keyfile, "--data", connData, "--log-level", "warn", "--drain-timeout", "1s"}
	for _, n := range names {
		args = append(args, "--service", n+"="+backends[n])
	}
	if s.connector, err = startProcOn(site, exe, dir, "connector", profileEnv(profile, "connector"), args...); err != nil {
		s.stop()
		return nil, err
	}
	if err := s.waitReady(ctx, s.public[probe]); err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}

// profileEnv is the environment that makes a sallyport process write its
// profiles into dir, or nil without a dir.
func profileEnv(dir, name string) []string {
	if dir == "" {
		return nil
	}
	return []string{
		"SALLYPORT_CPUPROFILE=" + filepath.Join(dir, name+".cpu"),
		"SALLYPORT_MEMPROFILE=" + filepath.Join(dir, name+".heap"),
	}
}

// createToken asks the edge for a keyfile, retrying while its admin API
// comes up.
func (s *sallyport) createToken(ctx context.Context, edgeData, keyfile string, services []string) error {
	deadline := time.Now().Add(20 * time.Second)
	args := []string{"token", "create", "--data", edgeData, "--name", "bench", "--ttl", "10m", "-o", keyfile}
	for _, n := range services {
		args = append(args, "--service", n)
	}
	for {
		out, err := exec.CommandContext(ctx, s.exe, args...).CombinedOutput()
		if err == nil {
			return nil
		}
		if s.edge.Exited() {
			return fmt.Errorf("the edge exited during start-up; its log:\n%s", s.edge.tail())
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("create a connector token on the bench edge: %v: %s; edge log:\n%s",
				err, bytes.TrimSpace(out), s.edge.tail())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitReady waits until one byte goes through addr and comes back.
func (s *sallyport) waitReady(ctx context.Context, addr string) error {
	deadline := time.Now().Add(30 * time.Second)
	var last error
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if s.connector.Exited() {
			return fmt.Errorf("the connector exited during start-up; its log:\n%s", s.connector.tail())
		}
		if last = roundTrip(s.client, addr); last == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return fmt.Errorf("no round trip through the tunnel within 30s (last: %v); connector log:\n%s", last, s.connector.tail())
}

// roundTrip sends one byte from h to an echo service at addr and reads
// it back.
func roundTrip(h *host, addr string) error {
	c, err := h.dialTimeout(addr, 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte{'x'}); err != nil {
		return err
	}
	var b [1]byte
	_, err = c.Read(b[:])
	return err
}

// pids returns the edge's and the connector's process ids.
func (s *sallyport) pids() (edge, connector int) { return s.edge.Pid(), s.connector.Pid() }

// cpu returns the CPU seconds used by edge and connector together.
func (s *sallyport) cpu() (float64, error) {
	a, err := cpuSeconds(s.edge.Pid())
	if err != nil {
		return 0, err
	}
	b, err := cpuSeconds(s.connector.Pid())
	return a + b, err
}

// alive returns an error naming a process that has died.
func (s *sallyport) alive() error {
	for _, p := range []*proc{s.edge, s.connector} {
		if p != nil && p.Exited() {
			return fmt.Errorf("the %s (pid %d) exited during the run; its log:\n%s", p.name, p.Pid(), p.tail())
		}
	}
	return nil
}

// stop kills both processes by PID and waits for them.
func (s *sallyport) stop() {
	var wg sync.WaitGroup
	for _, p := range []*proc{s.connector, s.edge} {
		if p != nil {
			wg.Go(p.stop)
		}
	}
	wg.Wait()
}
