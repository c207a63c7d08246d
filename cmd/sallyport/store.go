package main

import (
	"context"
	"log/slog"
	"net"

	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/edge"
	"github.com/sallyport/sallyport/internal/enroll"
	"github.com/sallyport/sallyport/internal/join"
	"github.com/sallyport/sallyport/internal/witness"
	"github.com/spf13/cobra"
)

// defaultWitnessData is the witness's data directory when --data is not given.
const defaultWitnessData = "/var/lib/sallyport/store"

func newStoreCmd() *cobra.Command {
	var (
		opts     witness.Options
		logs     logFlags
		joinFile string
	)
	cmd := &cobra.Command{
		Use:   "store",
		Short: "Run a store-only cluster member (a witness): the third JetStream server for two edges",
		Long: `Run only the embedded NATS server, as a member of the edges' cluster: no tunnel
port, no client listener, no admin API; only the cluster port, on which members
accept each other by route certificates of the edge CA.

Two edges cannot make a quorum of three; two edges and a witness survive the
loss of any one of the three. The witness's route certificate, key and the edge
CA certificate are read from DATA/pki (route.crt, route.key, ca.crt), where
joining the cluster puts them; routes are --cluster-route and DATA/cluster.json.`,
		Example: `  # on an edge: sallyport edges join-token --witness -o witness.join; then, on the witness host:
  sallyport store --data /var/lib/sallyport/store --join witness.join --cluster-listen :6222 --cluster-advertise witness.example.com:6222`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(cmd.ErrOrStderr(), logs.format, logs.level)
			if err != nil {
				return err
			}
			if joinFile != "" {
				if err := joinAsWitness(cmd.Context(), opts, joinFile, log); err != nil {
					return err
				}
			}
			w, err := witness.New(opts, log)
			if err != nil {
				return err
			}
			return runUntilDone(cmd.Context(), w.Run)
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.DataDir, "data", defaultWitnessData, "data directory: pki/ (route certificate), NATS files, cluster.json")
	f.StringVar(&opts.Listen, "cluster-listen", "", "cluster port address, e.g. :6222 (required)")
	f.StringVar(&opts.Advertise, "cluster-advertise", "", "HOST:PORT the other members dial to reach this one (default: derived from --cluster-listen)")
	f.StringArrayVar(&opts.Routes, "cluster-route", nil, "HOST:PORT of a member's cluster port (repeatable; DATA/cluster.json adds more)")
	f.StringVar(&joinFile, "join", "", "join keyfile (from 'sallyport edges join-token --witness' on an edge of the cluster): make this witness a member, then run; a data directory that joined already just runs")
	f.IntVar(&opts.Replicas, "replicas", 0, "copies of each bucket: 1, or 3 (0: 3 once the cluster has three servers)")
	logs.register(cmd)
	cmd.MarkFlagRequired("cluster-listen")
	return cmd
}

// joinAsWitness makes the witness of opts a member of the cluster of the
// join keyfile, once (join.Redeem): a data directory that joined already
// is left as it is.
func joinAsWitness(ctx context.Context, opts witness.Options, keyfile string, log *slog.Logger) error {
	id, err := witness.LoadOrCreateID(opts.DataDir)
	if err != nil {
		return err
	}
	_, err = join.Redeem(ctx, join.Options{Keyfile: keyfile, DataDir: opts.DataDir, Role: enroll.RoleWitness, Name: join.NamePrefix + id,
		Advertise: edge.ClusterAdvertise(config.Cluster{Listen: opts.Listen, Advertise: opts.Advertise}, net.InterfaceAddrs), Logger: log})
	return err
}
