package main

import (
	"github.com/sallyport/sallyport/internal/doctor"
	"github.com/spf13/cobra"
)

func newDoctorCmd() *cobra.Command {
	var flags connectorFlags
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Check a connector's setup and its way to each edge, without connecting as the connector (exit 0: no check failed)",
		Long: `Read the connector's config, keyfile and data directory as 'sallyport connector'
with the same flags would (a config it would refuse is refused), and check,
printing a table:

  certificate  the connector's certificate: valid, due for renewal (WARN), expired
               (FAIL); before enrollment, the keyfile's token
  resolve      each edge's host name resolves (unless the proxy resolves it)
  reach        its port answers: TCP, through the proxy, or the WebSocket upgrade
  tls          the TLS handshake, with the edge's certificate chaining to the
               pinned CA; the edge's verdict on the connector's certificate
  clock        the skew between the edge's clock and this host's

It enrolls nothing (the keyfile's token stays unused), renews nothing and opens
no tunnel: the edge does not count it as the connector. Exit status 1 when a
check failed.`,
		Example: `  sallyport doctor --config /etc/sallyport/connector.yaml
  sallyport doctor --keyfile site-a.keyfile --service db=127.0.0.1:5432   # the connector's own command line`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := flags.config(cmd)
			if err != nil {
				return err
			}
			report, err := doctor.Run(cmd.Context(), c, doctor.Options{})
			if err != nil {
				return err
			}
			if err := report.Write(cmd.OutOrStdout()); err != nil {
				return err
			}
			if report.Failed() {
				return errUnhealthy{}
			}
			return nil
		},
	}
	flags.register(cmd)
	return cmd
}
