package main

import (
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"

	"github.com/sallyport/sallyport/internal/admin"
	"github.com/sallyport/sallyport/internal/health"
	"github.com/spf13/cobra"
)

// errUnhealthy ends `sallyport health` with exit status 1 after its line
// has been printed.
type errUnhealthy struct{}

func (errUnhealthy) Error() string { return "" }

func newHealthCmd() *cobra.Command {
	var (
		data, base string
		live       bool
	)
	cmd := &cobra.Command{
		Use:   "health",
		Short: "Ask a running edge or connector whether it is ready (exit 0) or not (exit 1), for exec probes",
		Long: `Ask /readyz (or /livez with --live) and print one line: "ok", or the reason.
Exit status 0 when ok, 1 otherwise: a container's or orchestrator's exec probe
needs no curl in the image. By default it asks the edge whose data directory
--data names, over its admin socket; --url asks anything else, such as a
connector's health.listen.`,
		Example: `  sallyport health                          # the edge in /var/lib/sallyport/edge
  sallyport health --live --data ./edge-data
  sallyport health --url http://127.0.0.1:5502   # a connector's --health-listen`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path := health.ReadyPath
			if live {
				path = health.LivePath
			}
			ask := func() error {
				c := &admin.Client{Socket: filepath.Join(data, admin.SocketFile)}
				return c.Probe(cmd.Context(), path)
			}
			if base != "" {
				u, err := probeURL(base, path)
				if err != nil {
					return err
				}
				// A redirect is an answer that is not ok, not one to follow.
				hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
				ask = func() error { return health.Probe(cmd.Context(), hc, u, 0) }
			}
			err := ask()
			out := cmd.OutOrStdout()
			if err != nil {
				fmt.Fprintln(out, "not ok:", err)
				return errUnhealthy{}
			}
			fmt.Fprintln(out, "ok")
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&data, "data", defaultEdgeData, "the edge's data directory, whose admin socket is asked")
	f.StringVar(&base, "url", "", "ask http://HOST:PORT instead (a connector's health.listen, or an edge's admin.health_listen)")
	f.BoolVar(&live, "live", false, "ask /livez (the process serves) instead of /readyz (it is ready for clients)")
	cmd.MarkFlagsMutuallyExclusive("data", "url")
	return cmd
}

// probeURL returns the URL of path at base, which must be an http://
// URL with no path of its own.
func probeURL(base, path string) (string, error) {
	u, err := url.Parse(base)
	if err != nil || u.Scheme != "http" || u.Host == "" || strings.Trim(u.Path, "/") != "" || u.RawQuery != "" {
		return "", fmt.Errorf("bad --url %q: use http://HOST:PORT", base)
	}
	return "http://" + u.Host + path, nil
}
