package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/sallyport/sallyport/internal/bench/traffic"
	"github.com/sallyport/sallyport/internal/wanlink"
)

// The WAN mode: what loopback hides. The edge and the clients run on one
// side of an emulated link (wanlink: far), the connector and the
// back-ends on the other (site), so that the tunnel crosses the link, and
// a direct connection from a client to a back-end crosses the same link.
// Each figure is measured both ways in the same run: bulk with 1 and 8
// streams each way (iperf3), and the time to the first byte of a new
// connection (curl's time_starttransfer, which counts the TCP handshake).

// wanHost is one side of the link as the bench runs processes there.
func wanHost(h *wanlink.Host) *host {
	next := 20000 // fresh namespaces: every port is free
	return &host{
		addr:    h.Addr,
		command: h.Command,
		dial: func(ctx context.Context, addr string) (net.Conn, error) {
			return h.Dial(ctx, "tcp", addr)
		},
		ports: func(n int) ([]int, error) {
			p := make([]int, n)
			for i := range p {
				p[i] = next
				next++
			}
			return p, nil
		},
	}
}

// wanPhases are the WAN run's durations.
type wanPhases struct {
	secs, omit int // each iperf3 test: counted seconds after omitted ones
	firstBytes int // new connections timed, each way
}

func (o Options) wanPhases() wanPhases {
	if o.Quick {
		return wanPhases{secs: 3, omit: 1, firstBytes: 5}
	}
	return wanPhases{secs: 8, omit: 2, firstBytes: 15}
}

// RunWAN measures sallyport against a direct connection across an
// emulated WAN link made to spec (root only), and returns the report.
func RunWAN(ctx context.Context, o Options, spec wanlink.Spec) (*Report, error) {
	o = o.withDefaults()
	if o.Exe == "" {
		return nil, fmt.Errorf("bench: no sallyport binary given")
	}
	tl := findTools()
	if tl.iperf3 == "" {
		return nil, errors.New("bench --wan needs iperf3 (Debian package iperf3)")
	}
	curl, err := exec.LookPath("curl")
	if err != nil {
		return nil, errors.New("bench --wan needs curl (Debian package curl)")
	}
	ph := o.wanPhases()
	rep := newReport(o)
	rep.WAN, rep.lossy = spec.String(), spec.Loss > 0
	rep.Tools = "bulk: iperf3 " + toolVersion(tl.iperf3, "--version") + "; first byte: curl"
	if err := wanlink.RemoveStale(func(format string, args ...any) { fmt.Fprintf(o.Progress, "bench: "+format+"\n", args...) }); err != nil {
		return nil, err
	}
	fmt.Fprintf(o.Progress, "bench: building the emulated link (%s)\n", spec)
	link, err := wanlink.Start(spec)
	if err != nil {
		return nil, err
	}
	defer link.Close()
	stopLink := context.AfterFunc(ctx, func() { link.Close() })
	defer stopLink()
	far, site := wanHost(link.Far), wanHost(link.Site)
	if cc, err := link.Far.Run(ctx, "cat", "/proc/sys/net/ipv4/tcp_congestion_control"); err == nil {
		rep.Notes = append(rep.Notes, fmt.Sprintf("TCP congestion control on both sides: %s (the host's); loss figures depend on it", strings.TrimSpace(cc)))
	}

	dir, cleanup, err := o.runDir()
	if err != nil {
		return nil, err
	}
	defer cleanup()
	beProc, bound, err := startBackendProc(site, o.Exe, dir, []string{"echo=" + site.addr + ":0", "http=" + site.addr + ":0"})
	if err != nil {
		return nil, err
	}
	defer beProc.stop()
	iperf, err := startIperf3Server(site, tl.iperf3, dir)
	if err != nil {
		return nil, err
	}
	defer iperf.stop()
	backends := map[string]string{"echo": bound[0], "http": bound[1], "iperf": iperf.addr}
	fmt.Fprintf(o.Progress, "bench: starting the edge (far side) and the connector (site side)\n")
	sp, err := startSallyport(ctx, far, site, o.Exe, dir, o.Profile, backends, "echo")
	if err != nil {
		return nil, err
	}
	defer sp.stop()
	rep.EdgePID, rep.ConnectorPID = sp.pids()
	paths := []path{{name: direct, public: backends}, {name: sallyportPath, public: sp.public, alive: sp.alive}}
	for _, p := range paths {
		rep.Paths = append(rep.Paths, p.name)
	}

	cases := []bulkCase{{"wan_1_up", 1, false}, {"wan_1_down", 1, true}, {"wan_8_up", 8, false}, {"wan_8_down", 8, true}}
	samples := samples{}
	add := samples.add
	var carried int64
	for r := range o.Reps {
		order := rotate(paths, r)
		for _, bc := range cases {
			for _, p := range order {
				if err := bc.announce(ctx, o, r, p); err != nil {
					return rep, err
				}
				b, err := iperf3Bulk(ctx, far, tl.iperf3, iperf, p.public["iperf"], bc.streams, ph.secs, ph.omit, bc.reverse)
				if err != nil {
					return rep, p.died(err)
				}
				add(bc.key, p.name, b.MBps()*8)
				if p.name == sallyportPath {
					carried += b.Bytes
				}
			}
		}
		for _, p := range order {
			fmt.Fprintf(o.Progress, "bench: rep %d/%d: first byte of a new connection %s\n", r+1, o.Reps, p.name)
			ttfb, err := firstBytes(ctx, far, curl, p.public["http"], ph.firstBytes)
			if err != nil {
				return rep, p.died(err)
			}
			for _, d := range ttfb {
				add("wan_ttfb", p.name, float64(d)/float64(time.Millisecond))
			}
		}
	}
	samples.medians(rep)
	toSite, toFar := link.Stats()
	rep.Notes = append(rep.Notes, fmt.Sprintf("link: toward site %d packets, %d lost, %d dropped with the buffer full; toward far %d, %d lost, %d dropped full",
		toSite.Packets, toSite.Lost, toSite.Full, toFar.Packets, toFar.Lost, toFar.Full))
	rep.TunneledBytes = carried
	rep.finish()
	return rep, nil
}

// firstBytes runs curl n times from h for the http back-end at addr, each
// on a new connection, and returns each time to the first byte of the
// response, the TCP handshake included.
func firstBytes(ctx context.Context, h *host, curl, addr string, n int) ([]time.Duration, error) {
	var out []time.Duration
	for range n {
		ctx, cancel := context.WithTimeout(ctx, traffic.IOTimeout)
		b, err := h.command(ctx, curl, "--silent", "--show-error", "--fail", "--output", "/dev/null",
			"--write-out", "%{time_starttransfer} %{size_download}", "http://"+addr+"/").CombinedOutput()
		cancel()
		if err != nil {
			return nil, fmt.Errorf("curl http://%s/: %v: %s", addr, err, strings.TrimSpace(string(b)))
		}
		f := strings.Fields(string(b))
		if len(f) != 2 || f[1] != strconv.Itoa(traffic.MessageSize) {
			return nil, fmt.Errorf("curl http://%s/: got %q, want the time and %d bytes", addr, b, traffic.MessageSize)
		}
		secs, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return nil, fmt.Errorf("curl http://%s/: time %q: %w", addr, f[0], err)
		}
		out = append(out, time.Duration(secs*float64(time.Second)))
	}
	return out, nil
}
