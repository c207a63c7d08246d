package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
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
	Quick     bool   `json:"quick"`
	Duration  string `json:"duration"`

	EdgePID      int `json:"edge_pid"`
	ConnectorPID int `json:"connector_pid"`

	Rows []Row `json:"rows"`
	// CPUPerGB is the CPU seconds edge and connector used per GB carried
	// on one stream (both directions' runs).
	CPUPerGB float64     `json:"cpu_s_per_gb"`
	IdleRSS  RSS         `json:"idle_rss"`
	Idle     []IdleLevel `json:"idle"`
	// SkippedIdle lists the idle counts that the open-file limit left out.
	SkippedIdle []int `json:"skipped_idle,omitempty"`
	// TunneledBytes is the payload carried through sallyport and checked.
	TunneledBytes int64    `json:"tunneled_bytes"`
	Notes         []string `json:"notes,omitempty"`

	start  time.Time
	values map[string][2]float64
}

// Row is one figure measured direct and through sallyport.
type Row struct {
	Key    string  `json:"key"`
	Name   string  `json:"name"`
	Unit   string  `json:"unit"`
	Direct float64 `json:"direct"`
	Tunnel float64 `json:"sallyport"`
	// Ratio is sallyport's figure over direct's.
	Ratio float64 `json:"ratio"`
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
		values: map[string][2]float64{}}
}

func (r *Report) set(key string, direct, tunnel float64) { r.values[key] = [2]float64{direct, tunnel} }

// rowSpec names a figure and its target: at least min of direct (a
// rate), or at most max times direct (a latency).
type rowSpec struct {
	key, name, unit string
	min, max        float64
}

// rowSpecs lists the rows in table order.
func rowSpecs() []rowSpec {
	return []rowSpec{
		{"bulk_1_up", "bulk, 1 stream, client → back-end", "MB/s", 0.40, 0},
		{"bulk_1_down", "bulk, 1 stream, back-end → client", "MB/s", 0.40, 0},
		{"bulk_8_up", "bulk, 8 streams, client → back-end", "MB/s", 0.45, 0},
		{"bulk_8_down", "bulk, 8 streams, back-end → client", "MB/s", 0.45, 0},
		{"rr_rate", "100 B req/resp, 50 kept-alive clients", "req/s", 0.45, 0},
		{"rr_p50", "  latency p50", "µs", 0, 0},
		{"rr_p99", "  latency p99", "µs", 0, 1.2},
		{"conn_rate", "new connection per request", "conn/s", 0.50, 0},
		{"conn_p50", "  time to first byte p50", "µs", 0, 2.5},
		{"conn_p99", "  time to first byte p99", "µs", 0, 0},
	}
}

// finish turns the measured values into rows and checks the targets.
func (r *Report) finish() {
	r.LoadEnd = loadavg()
	r.Duration = time.Since(r.start).Round(time.Second).String()
	for _, s := range rowSpecs() {
		v, ok := r.values[s.key]
		if !ok {
			continue
		}
		row := Row{Key: s.key, Name: s.name, Unit: s.unit, Direct: v[0], Tunnel: v[1]}
		if v[0] > 0 {
			row.Ratio = v[1] / v[0]
		}
		switch {
		case s.min > 0:
			row.Target = fmt.Sprintf("≥ %.0f %% of direct", 100*s.min)
			row.Met = ptr(row.Ratio >= s.min)
		case s.max > 0:
			row.Target = fmt.Sprintf("≤ %.1f× direct", s.max)
			row.Met = ptr(row.Ratio <= s.max)
		}
		r.Rows = append(r.Rows, row)
	}
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
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "figure\tunit\tdirect\tsallyport\tratio\ttarget\t\t")
	for _, row := range r.Rows {
		ratio := fmt.Sprintf("%.0f %%", 100*row.Ratio)
		if row.Unit == "µs" {
			ratio = fmt.Sprintf("%.2f×", row.Ratio)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", row.Name, row.Unit, num(row.Direct), num(row.Tunnel), ratio, row.Target, verdict(row.Met))
	}
	if r.CPUPerGB > 0 {
		fmt.Fprintf(tw, "edge+connector CPU, 1 stream\tCPU-s/GB\t—\t%.2f\t\t≤ 1.5\t%s\t\n", r.CPUPerGB, verdict(ptr(r.CPUPerGB <= 1.5)))
	}
	fmt.Fprintf(tw, "RSS at rest, edge + connector\tMiB\t—\t%s\t\t\t\t\n", mib(r.IdleRSS.Edge+r.IdleRSS.Connector))
	for _, l := range r.Idle {
		target, met := "", (*bool)(nil)
		if l.Conns == 10000 {
			target, met = "≤ 20 KB", ptr(l.PerConn <= 20000)
		}
		fmt.Fprintf(tw, "%d idle conns: RSS edge + connector\tMiB\t—\t%s + %s\t\t\t\t\n", l.Conns, mib(l.RSS.Edge), mib(l.RSS.Connector))
		fmt.Fprintf(tw, "  per idle connection\tKB\t—\t%.1f\t\t%s\t%s\t\n", l.PerConn/1000, target, verdict(met))
		target, met = "", nil
		if l.Conns == 50000 {
			target, met = "all held", ptr(l.Carried == l.Conns)
		}
		fmt.Fprintf(tw, "  still carrying a byte\tconns\t—\t%d\t\t%s\t%s\t\n", l.Carried, target, verdict(met))
	}
	for _, n := range r.SkippedIdle {
		target, met := "", (*bool)(nil)
		if n == 50000 {
			target, met = "all held", ptr(false)
		}
		fmt.Fprintf(tw, "%d idle conns\tconns\t—\tnot run: open-file limit\t\t%s\t%s\t\n", n, target, verdict(met))
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
