package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is what a run measured. Rates and latencies are medians over
// the repetitions.
type Report struct {
	Date    time.Time `json:"date"`
	Machine string    `json:"machine"`
	// Load is /proc/loadavg (1, 5, 15 minutes) at the start and the end.
	LoadStart string `json:"load_start"`
	LoadEnd   string `json:"load_end"`
	Reps      int    `json:"reps"`
	// Tools says which load generators measured (iperf3 and wrk, or the
	// benchmark's own).
	Tools string `json:"tools"`
	// Paths lists the columns: direct, sallyport and, compared, ssh.
	Paths []string `json:"paths"`
	// WAN is the emulated link's spec (RTT, loss, rate) in the WAN
	// mode; empty on loopback.
	WAN      string `json:"wan,omitempty"`
	Quick    bool   `json:"quick"`
	Duration string `json:"duration"`

	EdgePID      int `json:"edge_pid"`
	ConnectorPID int `json:"connector_pid"`

	Rows []Row `json:"rows"`
	// CPUPerGB is the CPU seconds edge and connector used per GB carried
	// on one stream (both directions' runs); CPUPerGBSSH the same for
	// sshd and ssh, when compared.
	CPUPerGB    float64     `json:"cpu_s_per_gb"`
	CPUPerGBSSH float64     `json:"cpu_s_per_gb_ssh,omitempty"`
	IdleRSS     RSS         `json:"idle_rss"`
	Idle        []IdleLevel `json:"idle"`
	// SkippedIdle lists the idle counts that the open-file limit left out.
	SkippedIdle []int `json:"skipped_idle,omitempty"`
	// TunneledBytes is the payload carried through sallyport and checked.
	TunneledBytes int64    `json:"tunneled_bytes"`
	Notes         []string `json:"notes,omitempty"`

	start  time.Time
	values map[string]map[string]float64 // key → path → median
	lossy  bool                          // the WAN link loses packets
}

// Row is one figure measured direct and through sallyport.
type Row struct {
	Key    string  `json:"key"`
	Name   string  `json:"name"`
	Unit   string  `json:"unit"`
	Direct float64 `json:"direct"`
	Tunnel float64 `json:"sallyport"`
	SSH    float64 `json:"ssh,omitempty"`
	// Ratio is sallyport's figure over direct's; RatioSSH over ssh's.
	Ratio    float64 `json:"ratio"`
	RatioSSH float64 `json:"ratio_ssh,omitempty"`
	// Target is the goal in words; Met says whether the run reached it.
	Target string `json:"target,omitempty"`
	Met    *bool  `json:"met,omitempty"`
}

// RSS is the resident memory of the two processes, in bytes.
type RSS struct {
	Edge      int64 `json:"edge"`
	Connector int64 `json:"connector"`
}

// IdleLevel is one count of idle connections held through the tunnel.
type IdleLevel struct {
	Conns int `json:"conns"`
	RSS   RSS `json:"rss"`
	// PerConn is the growth of edge plus connector RSS over their idle
	// RSS, per connection, in bytes.
	PerConn float64 `json:"per_conn_bytes"`
	// Carried is how many connections still carried a byte both ways
	// after being held.
	Carried int `json:"carried"`
}

func newReport(o Options) *Report {
	now := time.Now()
	return &Report{Date: now.UTC(), start: now, Machine: machine(), LoadStart: loadavg(), Reps: o.Reps, Quick: o.Quick,
		values: map[string]map[string]float64{}}
}

func (r *Report) set(key, path string, v float64) {
	if r.values[key] == nil {
		r.values[key] = map[string]float64{}
	}
	r.values[key][path] = v
}

// rowSpec names a figure and its targets: at least min of direct (a
// rate), or at most max times direct (a latency); and, when ssh is
// compared, at least minSSH times ssh's.
type rowSpec struct {
	key, name, unit string
	min, max        float64
	minSSH          float64
}

// rowSpecs lists the rows in table order.
func rowSpecs() []rowSpec {
	return []rowSpec{
		{"bulk_1_up", "bulk, 1 stream, client → back-end", "MB/s", 0.30, 0, 1.2},
		{"bulk_1_down", "bulk, 1 stream, back-end → client", "MB/s", 0.30, 0, 1.2},
		{"bulk_8_up", "bulk, 8 streams, client → back-end", "MB/s", 0.30, 0, 0},
		{"bulk_8_down", "bulk, 8 streams, back-end → client", "MB/s", 0.30, 0, 0},
		{"rr_rate", "small requests, 50 kept-alive clients", "req/s", 0.45, 0, 0},
		{"rr_p50", "  latency p50", "µs", 0, 0, 0},
		{"rr_p99", "  latency p99", "µs", 0, 1.0, 0},
		{"rr_cpu", "  CPU per request (edge+connector; sshd+ssh)", "ms", 0, 0, 0},
		{"conn_rate", "new connection per request", "conn/s", 0.40, 0, 0},
		{"conn_p50", "  latency p50", "µs", 0, 3.0, 0},
		{"conn_p99", "  latency p99", "µs", 0, 0, 0},
		{"conn_cpu", "  CPU per connection (edge+connector; sshd+ssh)", "ms", 0, 0, 0},
	}
}

// wanRowSpecs lists the WAN mode's rows. The targets: at least 0.9 of
// direct's throughput on a clean link, 0.7 with loss; a first byte no
// later than direct's.
func wanRowSpecs(lossy bool) []rowSpec {
	min := 0.9
	if lossy {
		min = 0.7
	}
	return []rowSpec{
		{"wan_1_up", "WAN bulk, 1 stream, client → back-end", "Mbit/s", min, 0, 0},
		{"wan_1_down", "WAN bulk, 1 stream, back-end → client", "Mbit/s", min, 0, 0},
		{"wan_8_up", "WAN bulk, 8 streams, client → back-end", "Mbit/s", min, 0, 0},
		{"wan_8_down", "WAN bulk, 8 streams, back-end → client", "Mbit/s", min, 0, 0},
		{"wan_ttfb", "new connection: first byte, p50", "ms", 0, 1.0, 0},
	}
}

// finish turns the measured values into rows and checks the targets.
func (r *Report) finish() {
	r.LoadEnd = loadavg()
	r.Duration = time.Since(r.start).Round(time.Second).String()
	specs := rowSpecs()
	if r.WAN != "" {
		specs = wanRowSpecs(r.lossy)
	}
	for _, s := range specs {
		v, ok := r.values[s.key]
		if !ok {
			continue
		}
		row := Row{Key: s.key, Name: s.name, Unit: s.unit, Direct: v[direct], Tunnel: v[sallyportPath], SSH: v[sshPath]}
		if row.Direct > 0 {
			row.Ratio = row.Tunnel / row.Direct
		}
		if row.SSH > 0 {
			row.RatioSSH = row.Tunnel / row.SSH
		}
		var targets []string
		met := true
		switch {
		case s.min > 0:
			targets = append(targets, fmt.Sprintf("≥ %.2f of direct", s.min))
			met = met && row.Ratio >= s.min
		case s.max > 0:
			targets = append(targets, fmt.Sprintf("≤ %.1f× direct", s.max))
			met = met && row.Ratio <= s.max
		}
		if s.minSSH > 0 && row.SSH > 0 {
			targets = append(targets, fmt.Sprintf("≥ %.1f× ssh", s.minSSH))
			met = met && row.RatioSSH >= s.minSSH
		}
		if len(targets) > 0 {
			row.Target = strings.Join(targets, ", ")
			row.Met = ptr(met)
		}
		r.Rows = append(r.Rows, row)
	}
	cpu := r.values["cpu_per_gb"]
	r.CPUPerGB, r.CPUPerGBSSH = cpu[sallyportPath], cpu[sshPath]
}

func ptr(b bool) *bool { return &b }

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteTable prints the report as a table with each figure's ratio to
// direct and its target.
func (r *Report) WriteTable(w io.Writer) error {
	fmt.Fprintf(w, "sallyport bench, %s, %s\n", r.Date.Format("2006-01-02 15:04 MST"), r.Machine)
	fmt.Fprintf(w, "load average %s at start, %s at end; %d repetition(s), medians; took %s\n\n", r.LoadStart, r.LoadEnd, r.Reps, r.Duration)
	if r.WAN != "" {
		fmt.Fprintf(w, "emulated WAN link: %s (edge and clients on one side, connector and back-ends on the other)\n", r.WAN)
	}
	fmt.Fprintf(w, "load: %s\n\n", r.Tools)
	ssh := slices.Contains(r.Paths, sshPath)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	// cols are the figure's name, unit, then one cell per path and ratio.
	cols := func(name, unit, d, sp, sh, ratio, ratioSSH, target, verdict string) {
		cells := []string{name, unit, d, sp}
		if ssh {
			cells = append(cells, sh)
		}
		cells = append(cells, ratio)
		if ssh {
			cells = append(cells, ratioSSH)
		}
		cells = append(cells, target, verdict)
		fmt.Fprintln(tw, strings.Join(cells, "\t")+"\t")
	}
	cols("figure", "unit", "direct", "sallyport", "ssh -R", "vs direct", "vs ssh", "target", "")
	for _, row := range r.Rows {
		ratio := fmt.Sprintf("%.2f", row.Ratio)
		ratioSSH := fmt.Sprintf("%.2f", row.RatioSSH)
		if row.Unit == "µs" || row.Unit == "ms" {
			ratio, ratioSSH = ratio+"×", ratioSSH+"×"
		}
		d := num(row.Direct)
		if strings.HasSuffix(row.Key, "_cpu") {
			// A direct connection has no process of its own.
			d, ratio = "—", ""
		}
		cols(row.Name, row.Unit, d, num(row.Tunnel), num(row.SSH), ratio, ratioSSH, row.Target, verdict(row.Met))
	}
	if r.CPUPerGB > 0 {
		target, met, vs := "", (*bool)(nil), ""
		if r.CPUPerGBSSH > 0 {
			target, met, vs = "≤ 0.9× ssh", ptr(r.CPUPerGB <= 0.9*r.CPUPerGBSSH), fmt.Sprintf("%.2f×", r.CPUPerGB/r.CPUPerGBSSH)
		}
		cols("CPU per GB, 1 stream (edge+connector; sshd+ssh)", "CPU-s", "—", fmt.Sprintf("%.2f", r.CPUPerGB), fmt.Sprintf("%.2f", r.CPUPerGBSSH), "", vs, target, verdict(met))
	}
	row := func(name, unit, v, target, v2 string) { cols(name, unit, "—", v, "", "", "", target, v2) }
	if r.IdleRSS.Edge > 0 {
		row("RSS at rest, edge + connector", "MiB", mib(r.IdleRSS.Edge+r.IdleRSS.Connector), "", "")
	}
	for _, l := range r.Idle {
		target, met := "", (*bool)(nil)
		if l.Conns == 10000 {
			target, met = "≤ 10 KB", ptr(l.PerConn <= 10000)
		}
		row(fmt.Sprintf("%d idle conns: RSS edge + connector", l.Conns), "MiB", mib(l.RSS.Edge)+" + "+mib(l.RSS.Connector), "", "")
		row("  per idle connection", "KB", fmt.Sprintf("%.1f", l.PerConn/1000), target, verdict(met))
		row("  still carrying a byte", "conns", strconv.Itoa(l.Carried), "all", verdict(ptr(l.Carried == l.Conns)))
	}
	for _, n := range r.SkippedIdle {
		row(fmt.Sprintf("%d idle conns", n), "conns", "not run: open-file limit", "", "")
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "\n%s of payload carried through sallyport and checked.\n", mib(r.TunneledBytes)+" MiB")
	for _, n := range r.Notes {
		fmt.Fprintln(w, "note:", n)
	}
	return nil
}

func verdict(met *bool) string {
	switch {
	case met == nil:
		return ""
	case *met:
		return "met"
	}
	return "MISSED"
}

func num(v float64) string {
	switch {
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

func mib(b int64) string { return strconv.FormatFloat(float64(b)/(1<<20), 'f', 1, 64) }
