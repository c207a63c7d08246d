package main

import (
	"fmt"
	"os"
	"time"

	"github.com/sallyport/sallyport/internal/admin"
	"github.com/sallyport/sallyport/internal/atomicfile"
	"github.com/sallyport/sallyport/internal/edge"
	"github.com/spf13/cobra"
)

func newEdgesCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "edges", Short: "Manage the cluster of edges: join keyfiles for new edges and witnesses"}
	cmd.AddCommand(newJoinTokenCmd())
	return cmd
}

func newJoinTokenCmd() *cobra.Command {
	var (
		af      adminFlags
		witness bool
		ttl     time.Duration
		out     string
		edges   []string
		force   bool
	)
	cmd := &cobra.Command{
		Use:   "join-token",
		Short: "Create a one-time join keyfile that makes a new edge (or, with --witness, a store-only witness) part of this edge's cluster",
		Long: `Create a one-time join keyfile for a new member of this edge's cluster.

An edge's join keyfile buys the cluster CA's private key, because an edge
issues connector certificates: whoever redeems it first can impersonate any
edge to every connector. Keep it like the CA key itself: it is written with
mode 0600, is redeemed once, and expires (default 1h, at most 24h). Carry
it to the new host over a channel you trust and start the new member at once.
A witness's keyfile (--witness) buys no CA key: only the CA certificate and
the witness's route certificate.`,
		Example: `  sallyport edges join-token -o edge-b.join
  # copy edge-b.join to the new edge's host (scp, never e-mail), then there:
  sallyport edge --join edge-b.join --cluster-listen :6222 --cluster-advertise edge-b.example.com:6222 ...
  # edges on an external NATS: the same store section as the first edge, no cluster port
  sallyport edge --join edge-b.join --config edge.yaml
  sallyport edges join-token --witness -o witness.join`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			role := "edge"
			if witness {
				role = "witness"
			}
			if out == "" {
				out = role + ".join"
			}
			if out != "-" && !force {
				if _, err := os.Lstat(out); err == nil {
					return fmt.Errorf("%s exists: a keyfile is not overwritten without --force; choose another file with -o", out)
				}
			}
			if ttl <= 0 || ttl > edge.MaxJoinTTL {
				return fmt.Errorf("--ttl %s out of range: a join keyfile lives up to %s", ttl, edge.MaxJoinTTL)
			}
			c, err := af.client()
			if err != nil {
				return err
			}
			kf, err := c.CreateJoinKeyfile(cmd.Context(), admin.JoinTokenRequest{Role: role, TTL: ttl.String(), Edges: edges})
			if err != nil {
				return err
			}
			if out == "-" {
				_, err := cmd.OutOrStdout().Write(kf)
				return err
			}
			if err := atomicfile.Write(out, kf, 0o600); err != nil {
				return fmt.Errorf("write join keyfile: %w", err)
			}
			w := cmd.OutOrStdout()
			if witness {
				fmt.Fprintf(w, "wrote %s (mode 0600, one use, valid for %s); on the witness's host run:\n  sallyport store --join %s --cluster-listen :6222 --cluster-advertise HOST:6222\n", out, ttl, out)
				return nil
			}
			fmt.Fprintf(w, "wrote %s (mode 0600, one use, valid for %s); on the new edge's host run:\n  sallyport edge --join %s --cluster-listen :6222 --cluster-advertise HOST:6222 --advertise HOST:5500\n"+
				"(edges on an external NATS: --config with the same store section as this edge's, and no cluster port)\n", out, ttl, out)
			fmt.Fprintf(w, "warning: this keyfile carries the power of the cluster's CA key until it is used or expires: whoever redeems it can impersonate any edge to every connector. Keep it secret, move it over a trusted channel, redeem it now; if it leaks, revoke it: sallyport token revoke ID (sallyport token list shows it)\n")
			return nil
		},
	}
	af.register(cmd)
	f := cmd.Flags()
	f.BoolVar(&witness, "witness", false, "for a store-only witness (sallyport store): no CA key")
	f.DurationVar(&ttl, "ttl", time.Hour, "how long the token may be redeemed (at most 24h)")
	f.StringVarP(&out, "output", "o", "", "join keyfile to write, mode 0600 (default edge.join or witness.join; - for standard output)")
	f.StringSliceVar(&edges, "edge", nil, "HOST:PORT of this cluster's tunnel ports the new member should dial, instead of the edge's advertised addresses (repeatable)")
	f.BoolVar(&force, "force", false, "overwrite the -o file if it exists")
	return cmd
}
