package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/sallyport/sallyport/internal/atomicfile"
	"github.com/sallyport/sallyport/internal/bench"
	"github.com/sallyport/sallyport/internal/bench/traffic"
	"github.com/sallyport/sallyport/internal/wanlink"
	"github.com/spf13/cobra"
)

func newBenchCmd() *cobra.Command {
	var (
		quick    bool
		reps     int
		jsonPath string
		idle     []int
		backends []string
		profile  string
		keep     string
		compare  string
		wan      string
		only     []string
	)
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure sallyport against a direct loopback connection and OpenSSH's ssh -R (throughput, latency, memory, CPU)",
		Long: `bench starts an edge, a connector and the back-ends as separate processes on
loopback and measures each figure through sallyport and directly against the
same back-end in the same run: bulk throughput (1 and 8 streams, each way),
small HTTP requests on 50 kept-alive connections and on a new connection per
request, the RSS of edge and connector while they hold idle connections, and
the CPU time per GB that edge and connector spend. The load comes from iperf3
(bulk) and wrk (requests) where they are installed (Debian packages iperf3,
wrk), otherwise from the benchmark's own generators; the report says which.
With --compare ssh the same phases also run through OpenSSH's remote
forwarding (a throwaway sshd on loopback and ssh -R, both held to
aes128-gcm@openssh.com), in rotated order. It prints a table with each
figure's ratio to direct (and to ssh) and its target.

It raises its open-file limit itself (up to the hard limit, or beyond as
root); idle counts that do not fit are skipped with a note saying how to
raise the hard limit.`,
		Example: `  sallyport bench --quick
  sallyport bench --compare ssh
  sallyport bench --wan 50ms,0%,1gbit
  sallyport bench --reps 5 --json bench.json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(backends) > 0 {
				// The benchmark's back-end process, run by the benchmark itself.
				return traffic.ServeBackends(cmd.Context(), backends, cmd.OutOrStdout())
			}
			exe, err := os.Executable()
			if err != nil {
				return fmt.Errorf("find this binary to run the edge and the connector: %w", err)
			}
			if profile != "" {
				if profile, err = filepath.Abs(profile); err == nil {
					err = os.MkdirAll(profile, 0o755)
				}
				if err != nil {
					return fmt.Errorf("--profile: %w", err)
				}
			}
			if compare != "" && compare != "ssh" {
				return fmt.Errorf("--compare %q: the peer to compare with is ssh (OpenSSH's ssh -R)", compare)
			}
			opts := bench.Options{Exe: exe, Quick: quick, Reps: reps, Idle: idle, Profile: profile, Keep: keep,
				CompareSSH: compare == "ssh", Only: only, Progress: cmd.ErrOrStderr()}
			for _, p := range only {
				if !slices.Contains([]string{"bulk", "rr", "conn", "idle"}, p) {
					return fmt.Errorf("--only %q: the phases are bulk, rr, conn and idle", p)
				}
			}
			var rep *bench.Report
			if wan != "" {
				spec, perr := wanlink.ParseSpec(wan)
				if perr != nil {
					return fmt.Errorf("--wan: %w", perr)
				}
				if compare != "" {
					return errors.New("--wan and --compare: the WAN mode compares with a direct connection only")
				}
				if os.Geteuid() != 0 {
					return errors.New("--wan builds network namespaces and needs root")
				}
				rep, err = bench.RunWAN(cmd.Context(), opts, spec)
			} else {
				rep, err = bench.Run(cmd.Context(), opts)
			}
			if err != nil {
				if cmd.Context().Err() != nil {
					return errors.New("bench interrupted; its edge, connector and back-end processes are stopped")
				}
				return fmt.Errorf("bench: %w", err)
			}
			if err := rep.WriteTable(cmd.OutOrStdout()); err != nil {
				return err
			}
			if jsonPath != "" {
				if err := atomicfile.WriteFunc(jsonPath, 0o644, rep.WriteJSON); err != nil {
					return fmt.Errorf("write the JSON report: %w", err)
				}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&quick, "quick", false, "short phases and at most 1,000 idle connections: seconds instead of minutes")
	f.IntVar(&reps, "reps", 0, "repetitions of each phase; the table shows medians (default 3, or 1 with --quick)")
	f.StringVar(&jsonPath, "json", "", "also write the report as JSON to this file")
	f.IntSliceVar(&idle, "idle", nil, "idle connection counts to hold (default 1000,10000,50000, or 200,1000 with --quick)")
	f.StringVar(&profile, "profile", "", "write CPU and heap profiles of the edge and the connector into this directory (edge.cpu, connector.cpu, ...)")
	f.StringVar(&compare, "compare", "", "also run every load phase through a peer and show sallyport's ratio to it: ssh (a throwaway sshd on loopback and ssh -R, both held to aes128-gcm)")
	f.StringSliceVar(&only, "only", nil, "run only these phases: bulk, rr (kept-alive requests), conn (a new connection per request), idle; with --profile, a profile of one")
	f.StringVar(&wan, "wan", "", "measure across an emulated WAN link instead of loopback (root): RTT[,loss][,rate], e.g. 50ms,1%,1gbit")
	f.StringVar(&keep, "keep", "", "keep the run's data and logs (edge.log, connector.log, backend.log) in this directory")
	f.StringSliceVar(&backends, "serve-backends", nil, "serve only the benchmark's back-ends, kind=addr (the benchmark runs itself so)")
	f.MarkHidden("serve-backends")
	return cmd
}
