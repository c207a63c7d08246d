// Package bench measures sallyport against a direct loopback connection
// to the same back-end, in one run: throughput, small requests on
// kept-alive connections, a new connection per request, the memory that
// idle connections cost, and the CPU time per GB carried.
//
// The edge and the connector run as separate processes (the sallyport
// binary, re-executed with its edge and connector subcommands, with
// fresh data directories in a temporary directory, enrolled with a keyfile
// from 'sallyport token create'); the back-ends and the load generators
// run in the calling process, except the idle connections' echo back-end,
// which runs in a process of its own (ServeEcho) so that each process
// holds one descriptor per idle connection. Everything is on loopback.
//
//	rep, err := bench.Run(ctx, bench.Options{Exe: exe, Quick: true, Progress: os.Stderr})
//	rep.WriteTable(os.Stdout)
//
// Run shares no state between calls, but two runs at once would compete
// for the machine and measure each other.
package bench

import (
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/sallyport/sallyport/internal/bench/traffic"
)

// Options configure a run. The zero value of a field means its default.
type Options struct {
	// Exe is the sallyport binary to run as edge and connector; required.
	Exe string
	// Quick runs short phases and at most 1,000 idle connections: seconds
	// instead of minutes.
	Quick bool
	// Reps is how many times each throughput and latency phase runs; the
	// report holds medians. Default 3, or 1 with Quick.
	Reps int
	// Idle lists the idle-connection counts to hold. Default 1,000,
	// 10,000 and 50,000, or 200 and 1,000 with Quick.
	Idle []int
	// Profile, if set, is a directory where the edge and the connector
	// write CPU and heap profiles of the run (edge.cpu, edge.heap,
	// connector.cpu, connector.heap), for go tool pprof.
	Profile string
	// Keep, if set, is the directory for the run's data and logs (edge.log,
	// connector.log, backend.log), kept afterwards; by default a temporary
	// one is removed.
	Keep string
	// CompareSSH also runs every load phase through OpenSSH's remote
	// forwarding (ssh -R, see ssh.go) and reports sallyport's ratio to it.
	CompareSSH bool
	// Only, if set, runs only the phases it names: bulk, rr (kept-alive
	// requests), conn (a new connection per request), idle; for a
	// profile of one of them.
	Only []string
	// Progress, if set, receives a line as each phase starts.
	Progress io.Writer
}

// phases are the durations and sizes of one run.
type phases struct {
	bulk, requests, conns time.Duration
	clients, connWorkers  int
	settle                time.Duration
	// toolSecs is how long each iperf3 and wrk run lasts: whole seconds,
	// the unit both take.
	toolSecs int
}

func (o Options) phases() phases {
	if o.Quick {
		return phases{bulk: 300 * time.Millisecond, requests: 300 * time.Millisecond, conns: 300 * time.Millisecond,
			clients: 50, connWorkers: 16, settle: 200 * time.Millisecond, toolSecs: 1}
	}
	return phases{bulk: 2 * time.Second, requests: 2 * time.Second, conns: 2 * time.Second,
		clients: 50, connWorkers: 16, settle: time.Second, toolSecs: 3}
}

func (o Options) withDefaults() Options {
	if o.Reps <= 0 {
		o.Reps = 3
		if o.Quick {
			o.Reps = 1
		}
	}
	if len(o.Idle) == 0 {
		o.Idle = []int{1000, 10000, 50000}
		if o.Quick {
			o.Idle = []int{200, 1000}
		}
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	return o
}

// Run starts the back-ends, an edge and a connector, measures, stops
// everything it started (also when ctx ends, as on Ctrl-C) and returns
// the report.
func Run(ctx context.Context, o Options) (*Report, error) {
	o = o.withDefaults()
	if o.Exe == "" {
		return nil, fmt.Errorf("bench: no sallyport binary given")
	}
	ph := o.phases()
	rep := newReport(o)

	maxIdle := slices.Max(o.Idle)
	// Each process holds one descriptor per idle connection: the
	// benchmark its client end, the back-end process its server end, the
	// edge and the connector one each. They inherit the limit.
	limit, err := raiseFileLimit(uint64(maxIdle + reserveFDs))
	if err != nil {
		return nil, err
	}
	if fit := int(limit) - reserveFDs; fit < maxIdle {
		for _, n := range o.Idle {
			if n > fit {
				rep.SkippedIdle = append(rep.SkippedIdle, n)
			}
		}
		o.Idle = slices.DeleteFunc(o.Idle, func(n int) bool { return n > fit })
		// Hold as many as fit instead, in whole thousands: the most this
		// machine can show.
		if most := fit / 1000 * 1000; most > 0 && (len(o.Idle) == 0 || most > slices.Max(o.Idle)) {
			o.Idle = append(o.Idle, most)
		}
		rep.Notes = append(rep.Notes, fmt.Sprintf(
			"open-file limit is %d and this process may not raise it: idle runs above %d connections skipped "+
				"(the most that fit is held instead). "+
				"Raise the hard limit and run again: as root, `ulimit -Hn 1048576 && ulimit -Sn 1048576` in the shell "+
				"that starts the benchmark (or LimitNOFILE=1048576 in a systemd unit, or a nofile line in "+
				"/etc/security/limits.conf; in a container, start it with --ulimit nofile=1048576)", limit, fit))
	}

	dir, cleanup, err := o.runDir()
	if err != nil {
		return nil, err
	}
	defer cleanup()

	tl := findTools()
	rep.Tools = tl.describe()
	// The back-ends, in a process of their own: the load services, then
	// one echo per group of idle connections.
	specs := []string{"echo=127.0.0.1:0", "sink=127.0.0.1:0", "source=127.0.0.1:0", "http=127.0.0.1:0"}
	groups := (maxIdle + traffic.PerSource - 1) / traffic.PerSource
	for g := range groups {
		specs = append(specs, fmt.Sprintf("echo=127.0.0.%d:0", 10+g))
	}
	beProc, bound, err := startBackendProc(local, o.Exe, dir, specs)
	if err != nil {
		return nil, err
	}
	defer beProc.stop()
	load := map[string]string{"echo": bound[0], "sink": bound[1], "source": bound[2], "http": bound[3]}
	if tl.iperf3 != "" {
		if tl.iperfSrv, err = startIperf3Server(local, tl.iperf3, dir); err != nil {
			return nil, err
		}
		defer tl.iperfSrv.stop()
		load["iperf"] = tl.iperfSrv.addr
	}
	backends := maps.Clone(load)
	for g, a := range bound[4:] {
		backends[fmt.Sprintf("idle%d", g)] = a
	}

	fmt.Fprintf(o.Progress, "bench: starting edge and connector (%s)\n", o.Exe)
	sp, err := startSallyport(ctx, local, local, o.Exe, dir, o.Profile, backends, "echo")
	if err != nil {
		return nil, err
	}
	defer sp.stop()
	stopOnCancel := context.AfterFunc(ctx, func() { sp.stop(); beProc.stop() })
	defer stopOnCancel()
	rep.EdgePID, rep.ConnectorPID = sp.pids()
	paths := []path{
		{name: direct, public: load},
		{name: sallyportPath, public: sp.public, cpu: sp.cpu, alive: sp.alive},
	}
	if o.CompareSSH {
		fmt.Fprintf(o.Progress, "bench: starting the peer, sshd and ssh -R (%s)\n", sshCipher)
		peer, err := startSSH(ctx, dir, load, "echo")
		if err != nil {
			return nil, err
		}
		defer peer.stop()
		stopPeer := context.AfterFunc(ctx, peer.stop)
		defer stopPeer()
		paths = append(paths, path{name: sshPath, public: peer.public, cpu: peer.cpu, alive: peer.alive})
	}
	for _, p := range paths {
		rep.Paths = append(rep.Paths, p.name)
	}

	if !o.runs("idle") {
		o.Idle = nil
	}
	if err := measureIdle(ctx, o, ph, rep, sp, groups); err != nil {
		return rep, err
	}
	if err := measureLoad(ctx, o, ph, rep, tl, paths); err != nil {
		return rep, err
	}
	rep.finish()
	return rep, nil
}

// measureIdle records the RSS of edge and connector at rest and while
// they hold each count of idle connections, and checks that every
// connection still carries a byte.
func measureIdle(ctx context.Context, o Options, ph phases, rep *Report, sp *sallyport, groups int) error {
	time.Sleep(ph.settle)
	edgeIdle, err1 := rss(sp.edge.Pid())
	connIdle, err2 := rss(sp.connector.Pid())
	if err := firstErr(err1, err2); err != nil {
		return err
	}
	rep.IdleRSS = RSS{Edge: edgeIdle, Connector: connIdle}
	addrs := make([]string, groups)
	for g := range groups {
		addrs[g] = sp.public[fmt.Sprintf("idle%d", g)]
	}
	for _, n := range o.Idle {
		fmt.Fprintf(o.Progress, "bench: holding %d idle connections through the tunnel\n", n)
		timeout := 60*time.Second + time.Duration(n)*2*time.Millisecond
		conns, err := traffic.OpenIdle(ctx, addrs, n, timeout)
		if err != nil {
			return firstErr(sp.alive(), err)
		}
		time.Sleep(ph.settle)
		e, err1 := rss(sp.edge.Pid())
		c, err2 := rss(sp.connector.Pid())
		carried := traffic.CheckIdle(conns)
		traffic.CloseAll(conns)
		if err := firstErr(err1, err2); err != nil {
			return err
		}
		lvl := IdleLevel{Conns: n, RSS: RSS{Edge: e, Connector: c}, Carried: carried}
		lvl.PerConn = float64(e+c-edgeIdle-connIdle) / float64(n)
		rep.Idle = append(rep.Idle, lvl)
		if carried != n {
			return fmt.Errorf("idle connections: only %d of %d carried a byte after being held", carried, n)
		}
		// Give the tunnel time to let go of them before the next phase.
		time.Sleep(ph.settle)
	}
	return ctx.Err()
}

// reserveFDs is the open-file headroom each process keeps beyond its
// idle connections.
const reserveFDs = 1000

// A path is one way from the load generators to the same back-ends:
// direct, through sallyport, or through the peer (ssh -R).
type path struct {
	name string
	// public maps each load service to the address a client dials.
	public map[string]string
	// cpu returns the CPU seconds the path's own processes have used;
	// nil for direct. alive names a process of the path that died.
	cpu   func() (float64, error)
	alive func() error
}

// The paths' names, as the report's columns.
const (
	direct        = "direct"
	sallyportPath = "sallyport"
	sshPath       = "ssh"
)

// cpuSeconds is p.cpu, or 0 for a path without processes of its own.
func (p path) cpuSeconds() (float64, error) {
	if p.cpu == nil {
		return 0, nil
	}
	return p.cpu()
}

func (p path) died(err error) error {
	if p.alive != nil {
		return firstErr(p.alive(), err)
	}
	return err
}

// measureLoad runs the throughput and latency phases on every path,
// o.Reps times, each repetition with the paths in another order so that
// none always runs first (or last, on a warmer machine).
func measureLoad(ctx context.Context, o Options, ph phases, rep *Report, tl tools, paths []path) error {
	cases := []bulkCase{{"bulk_1_up", 1, false}, {"bulk_1_down", 1, true}, {"bulk_8_up", 8, false}, {"bulk_8_down", 8, true}}
	bulkRun := func(p path, bc bulkCase) (traffic.Bulk, error) {
		if tl.iperf3 != "" {
			return iperf3Bulk(ctx, local, tl.iperf3, tl.iperfSrv, p.public["iperf"], bc.streams, ph.toolSecs, 0, bc.reverse)
		}
		fn, svc := traffic.Upload, "sink"
		if bc.reverse {
			fn, svc = traffic.Download, "source"
		}
		return traffic.Parallel(bc.streams, func() (int64, error) { return fn(p.public[svc], ph.bulk) })
	}
	type reqCase struct {
		key, what string
		conns     int
		closeEach bool
	}
	reqCases := []reqCase{
		{"rr", fmt.Sprintf("%d kept-alive clients, 100-byte requests", ph.clients), ph.clients, false},
		{"conn", fmt.Sprintf("new connection per request, %d clients", ph.connWorkers), ph.connWorkers, true},
	}
	reqRun := func(p path, rc reqCase) (traffic.Requests, error) {
		if tl.wrk != "" {
			return wrkRequests(ctx, tl.wrk, p.public["http"], rc.conns, ph.toolSecs, rc.closeEach)
		}
		run := traffic.KeptAlive
		if rc.closeEach {
			run = traffic.NewConns
		}
		l, err := run(p.public["echo"], rc.conns, ph.requests)
		return l.Requests(), err
	}

	samples := samples{}
	add := samples.add
	cpuPerGB := map[string][]float64{}
	var carried int64
	for r := range o.Reps {
		order := rotate(paths, r)
		for _, bc := range cases {
			if !o.runs("bulk") {
				break
			}
			for _, p := range order {
				if err := bc.announce(ctx, o, r, p); err != nil {
					return err
				}
				var cpu0 float64
				if p.cpu != nil {
					var err error
					if cpu0, err = p.cpu(); err != nil {
						return p.died(err)
					}
				}
				b, err := bulkRun(p, bc)
				if err != nil {
					return p.died(err)
				}
				add(bc.key, p.name, b.MBps())
				if p.cpu == nil {
					continue
				}
				cpu1, err := p.cpu()
				if err != nil {
					return p.died(err)
				}
				if bc.streams == 1 {
					cpuPerGB[p.name] = append(cpuPerGB[p.name], (cpu1-cpu0)/(float64(b.Bytes)/1e9))
				}
				if p.name == sallyportPath {
					carried += b.Bytes
				}
			}
		}
		for _, rc := range reqCases {
			if !o.runs(rc.key) {
				continue
			}
			for _, p := range order {
				if err := ctx.Err(); err != nil {
					return err
				}
				fmt.Fprintf(o.Progress, "bench: rep %d/%d: %s %s\n", r+1, o.Reps, rc.what, p.name)
				cpu0, err := p.cpuSeconds()
				if err != nil {
					return p.died(err)
				}
				q, err := reqRun(p, rc)
				if err != nil {
					return p.died(err)
				}
				cpu1, err := p.cpuSeconds()
				if err != nil {
					return p.died(err)
				}
				if p.cpu != nil && q.Count > 0 {
					// CPU milliseconds of the path's processes per request.
					add(rc.key+"_cpu", p.name, (cpu1-cpu0)*1000/float64(q.Count))
				}
				add(rc.key+"_rate", p.name, q.Rate)
				add(rc.key+"_p50", p.name, micros(q.P50))
				add(rc.key+"_p99", p.name, micros(q.P99))
				if p.name == sallyportPath {
					carried += 2 * traffic.MessageSize * q.Count
				}
			}
		}
	}
	samples.medians(rep)
	for p, v := range cpuPerGB {
		rep.set("cpu_per_gb", p, median(v))
	}
	rep.TunneledBytes = carried
	return nil
}

// bulkCase is one bulk phase.
type bulkCase struct {
	key     string
	streams int
	reverse bool // back-end → client
}

// announce says that the phase starts on p in repetition r, unless ctx
// has ended.
func (bc bulkCase) announce(ctx context.Context, o Options, r int, p path) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	fmt.Fprintf(o.Progress, "bench: rep %d/%d: %s %s\n", r+1, o.Reps, bc.key, p.name)
	return nil
}

// rotate returns paths in the order repetition r runs them: each
// repetition starts with another, so that none always runs first (or
// last, on a warmer machine).
func rotate(paths []path, r int) []path {
	return slices.Concat(paths[r%len(paths):], paths[:r%len(paths)])
}

// runs reports whether the run includes phase.
func (o Options) runs(phase string) bool { return len(o.Only) == 0 || slices.Contains(o.Only, phase) }

// runDir returns the run's directory for data and logs: o.Keep, kept, or
// a temporary one that cleanup removes.
func (o Options) runDir() (dir string, cleanup func(), err error) {
	if o.Keep != "" {
		if err := os.MkdirAll(o.Keep, 0o700); err != nil {
			return "", nil, fmt.Errorf("bench: %w", err)
		}
		return o.Keep, func() {}, nil
	}
	if dir, err = os.MkdirTemp("", "sallyport-bench-"); err != nil {
		return "", nil, fmt.Errorf("bench: make a temporary directory: %w", err)
	}
	return dir, func() { os.RemoveAll(dir) }, nil
}

// samples holds a run's measurements: key → path → one per repetition.
type samples map[string]map[string][]float64

func (s samples) add(key, path string, v float64) {
	if s[key] == nil {
		s[key] = map[string][]float64{}
	}
	s[key][path] = append(s[key][path], v)
}

// medians sets each figure's median in rep.
func (s samples) medians(rep *Report) {
	for key, paths := range s {
		for p, v := range paths {
			rep.set(key, p, median(v))
		}
	}
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(v))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// machine describes the host for the report.
func machine() string {
	model := ""
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	return fmt.Sprintf("%s/%s, %d CPUs, %s", runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), model)
}

// loadavg returns /proc/loadavg's first three fields.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}
