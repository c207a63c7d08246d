// Command sallyport is the reverse connectivity gateway: one binary for the
// edge (DMZ), the connector (trusted network), their administration and a
// demo. Each subcommand turns flags and config into a role and runs it.
package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"syscall"

	"github.com/sallyport/sallyport/internal/atomicfile"
	"github.com/sallyport/sallyport/internal/wire"
	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The first signal starts the graceful stop (the drain); a second
	// one stops at once, as the signal's default action.
	go func() {
		<-ctx.Done()
		stop()
	}()
	stopProfiles, err := startProfiles()
	if err != nil {
		fmt.Fprintln(os.Stderr, "sallyport:", err)
		os.Exit(1)
	}
	root := newRoot(os.Stdout, os.Stderr)
	err = root.ExecuteContext(ctx)
	stopProfiles()
	if errors.As(err, new(errUnhealthy)) {
		os.Exit(1) // its line is printed
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "sallyport:", err)
		os.Exit(1)
	}
}

// startProfiles writes a CPU profile of the whole run to
// $SALLYPORT_CPUPROFILE and a heap profile at its end to
// $SALLYPORT_MEMPROFILE, where set (sallyport bench --profile sets them
// for the edge and the connector). The returned function ends them. The
// CPU profile is kept in memory and written, whole, at the end; an empty
// file there during the run shows the path is writable.
func startProfiles() (stop func(), err error) {
	cpuPath, memPath := os.Getenv("SALLYPORT_CPUPROFILE"), os.Getenv("SALLYPORT_MEMPROFILE")
	var cpu *bytes.Buffer
	if cpuPath != "" {
		if err := atomicfile.Write(cpuPath, nil, 0o644); err != nil {
			return nil, fmt.Errorf("SALLYPORT_CPUPROFILE: %w", err)
		}
		cpu = new(bytes.Buffer)
		if err := pprof.StartCPUProfile(cpu); err != nil {
			return nil, fmt.Errorf("SALLYPORT_CPUPROFILE: %w", err)
		}
	}
	return func() {
		if cpu != nil {
			pprof.StopCPUProfile() // returns once the profile is all in cpu
			atomicfile.Write(cpuPath, cpu.Bytes(), 0o644)
		}
		if memPath != "" {
			atomicfile.WriteFunc(memPath, 0o644, func(w io.Writer) error {
				return pprof.Lookup("heap").WriteTo(w, 0)
			})
		}
	}, nil
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "sallyport",
		Short: "Reverse connectivity gateway: reach services in a network that keeps every inbound port closed",
		Long: `sallyport carries client connections to services inside a trusted network
whose firewall admits no inbound connection: a connector inside dials out to an
edge in the DMZ, and clients connect to the edge.

  sallyport demo                       try it all on this machine
  sallyport edge --data DIR ...        run the edge (DMZ)
  sallyport token create --name SITE   make a keyfile for a new connector
  sallyport connector --keyfile FILE   run a connector (trusted network)
  sallyport doctor --keyfile FILE      check a connector's way to its edges first
  sallyport store --cluster-listen ... run a store-only witness for a cluster of two edges`,
		Version:       versionLine(),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetVersionTemplate("{{.Version}}\n")
	root.SetErr(stderr)
	root.AddCommand(newEdgeCmd(), newConnectorCmd(), newTokenCmd(), newEdgesCmd(), newConnectorsCmd(), newSessionsCmd(), newAuditCmd(), newStatusCmd(), newDemoCmd(), newVersionCmd(), newBenchCmd(), newStoreCmd(), newHealthCmd(), newDoctorCmd(), newReloadCmd())
	return root
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version and the tunnel protocol version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintln(cmd.OutOrStdout(), versionLine())
			return nil
		},
	}
}

// versionLine says which sallyport this is: the version set at build time
// or else the module version and the commit from the build info.
func versionLine() string {
	v := version
	if info, ok := debug.ReadBuildInfo(); ok && v == "dev" {
		if info.Main.Version != "" && info.Main.Version != "(devel)" {
			v = info.Main.Version
		}
		var commit, modified string
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				commit = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					modified = "-modified"
				}
			}
		}
		if commit != "" {
			v = fmt.Sprintf("%s+%.12s%s", v, commit, modified)
		}
	}
	return fmt.Sprintf("sallyport %s (tunnel protocol %d)", v, wire.Version)
}

// logFlags are the logging flags every long-running role has.
type logFlags struct {
	format, level string
}

func (l *logFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&l.format, "log-format", "", "log format: text or json (default text)")
	cmd.Flags().StringVar(&l.level, "log-level", "", "log level: debug, info, warn or error (default info)")
}

// newLogger builds the process logger on w.
func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	switch strings.ToLower(level) {
	case "", "info":
		lv = slog.LevelInfo
	case "debug":
		lv = slog.LevelDebug
	case "warn":
		lv = slog.LevelWarn
	case "error":
		lv = slog.LevelError
	default:
		return nil, fmt.Errorf("bad log level %q: use debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch strings.ToLower(format) {
	case "", "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("bad log format %q: use text or json", format)
}

// runUntilDone runs fn; a context cancelled by a signal is a clean exit.
func runUntilDone(ctx context.Context, fn func(context.Context) error) error {
	err := fn(ctx)
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}
