package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sallyport/sallyport/internal/admin"
	"github.com/sallyport/sallyport/internal/atomicfile"
	"github.com/sallyport/sallyport/internal/edge"
	"github.com/spf13/cobra"
)

// adminFlags locate a running edge's admin API.
type adminFlags struct {
	data, addr, token string
}

func (a *adminFlags) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&a.data, "data", defaultEdgeData, "the edge's data directory, whose admin socket the command uses")
	f.StringVar(&a.addr, "admin", "", "use the admin API's TCP address instead of the socket, with the bearer token")
	f.StringVar(&a.token, "admin-token", "", "with --admin: the bearer token (default: $SALLYPORT_ADMIN_TOKEN, else read from the data directory)")
}

// client builds the admin API client from the flags: over the edge's Unix
// socket in its data directory, which sends no token and is checked to be
// the edge's; or, with --admin, over TCP with the bearer token.
func (a *adminFlags) client() (*admin.Client, error) {
	if a.addr == "" {
		if _, err := os.Stat(a.data); err != nil {
			return nil, fmt.Errorf("no edge data directory here (run this on the edge's host, as its user, with --data set to its data directory): %w", err)
		}
		return &admin.Client{Socket: filepath.Join(a.data, admin.SocketFile)}, nil
	}
	c := &admin.Client{Addr: a.addr, Token: a.token}
	if c.Token == "" {
		c.Token = os.Getenv("SALLYPORT_ADMIN_TOKEN")
	}
	if c.Token == "" {
		t, err := edge.ReadAdminToken(a.data)
		if err != nil {
			return nil, err
		}
		c.Token = t
	}
	return c, nil
}

func newTokenCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "token", Aliases: []string{"tokens"}, Short: "Manage enrollment tokens"}
	var (
		af       adminFlags
		name     string
		ttl      time.Duration
		out      string
		edges    []string
		services []string
		replace  bool
		force    bool
	)
	create := &cobra.Command{
		Use:   "create",
		Short: "Create a one-time enrollment token and write it into a keyfile for a new connector",
		Example: `  sallyport token create --name site-a --service db --ttl 1h -o site-a.keyfile
  # copy site-a.keyfile to the connector's host, then there:
  sallyport connector --keyfile site-a.keyfile --service db=127.0.0.1:5432`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := af.client()
			if err != nil {
				return err
			}
			if out == "" {
				out = name + ".keyfile"
			}
			if out != "-" && !force {
				if _, err := os.Lstat(out); err == nil {
					return fmt.Errorf("%s exists: a keyfile is not overwritten without --force; choose another file with -o", out)
				}
			}
			kf, err := c.CreateKeyfile(cmd.Context(), admin.TokenRequest{Name: name, TTL: ttl.String(), Edges: edges, Services: services, Replace: replace})
			if err != nil {
				return err
			}
			if out == "-" {
				_, err := cmd.OutOrStdout().Write(kf)
				return err
			}
			if err := atomicfile.Write(out, kf, 0o600); err != nil {
				return fmt.Errorf("write keyfile: %w", err)
			}
			example := "NAME=HOST:PORT"
			if len(services) > 0 {
				example = services[0] + "=HOST:PORT"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s (one use, valid for %s); on the connector's host run:\n  sallyport connector --keyfile %s --service %s\n", out, ttl, out, example)
			if len(services) == 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "note: no service granted, so the connector can serve none until you run: sallyport connectors grant %s SERVICE\n", name)
			}
			return nil
		},
	}
	af.register(create)
	create.Flags().StringVar(&name, "name", "", "the connector's name, e.g. the site (required)")
	create.Flags().DurationVar(&ttl, "ttl", time.Hour, "how long the token may be redeemed")
	create.Flags().StringVarP(&out, "output", "o", "", "keyfile to write, mode 0600 (default NAME.keyfile; - for standard output)")
	create.Flags().StringSliceVar(&edges, "edge", nil, "HOST:PORT (or wss://HOST[:PORT]/.sallyport/tunnel) the connector should dial, instead of the edge's advertised addresses (repeatable)")
	create.Flags().StringArrayVar(&services, "service", nil, "a service the connector may offer, from its first tunnel (repeatable)")
	create.Flags().BoolVar(&force, "force", false, "overwrite the -o file if it exists")
	create.Flags().BoolVar(&replace, "replace", false, "the name is enrolled already: redeeming this keyfile revokes the connector enrolled under it")
	create.MarkFlagRequired("name")
	cmd.AddCommand(create, newTokensListCmd(), newTokensRevokeCmd())
	return cmd
}

func newStatusCmd() *cobra.Command {
	return adminCmd("status", "Show a running edge's services and connected connectors", cobra.NoArgs,
		func(cmd *cobra.Command, c *admin.Client, _ []string) (any, error) { return c.Status(cmd.Context()) },
		func(w io.Writer, v any) { printStatus(w, v.(admin.Status)) })
}

func printStatus(w io.Writer, st admin.Status) {
	fmt.Fprintf(w, "edge %s, tunnel port %s, advertised as %s\n", st.EdgeID, st.Tunnel, strings.Join(st.Advertise, ", "))
	if s := st.Store; s != nil {
		leader := s.Leader
		if leader == "" {
			leader = "none: no quorum, nothing can be written"
		}
		fmt.Fprintf(w, "store cluster: %d servers, %d online, leader %s\n", s.Servers, s.Online, leader)
	}
	if st.Fenced {
		fmt.Fprintln(w, "FENCED: this edge cannot reach its store; it refuses connectors and clients until it can")
	}
	if len(st.Cluster) > 0 {
		var edges []string
		for _, e := range st.Cluster {
			edges = append(edges, e.ID+" "+e.Address)
		}
		fmt.Fprintf(w, "cluster: %s\n", strings.Join(edges, ", "))
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tLISTEN\tTUNNELS")
	for _, s := range st.Services {
		fmt.Fprintf(tw, "%s\t%s\t%d\n", s.Name, s.Listen, s.Tunnels)
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CONNECTOR\tID\tREMOTE\tVIA\tUP SINCE\tSTREAMS\tSERVICES")
	for _, c := range st.Connectors {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", c.Name, c.ID, c.Remote, c.Transport, c.Since.Format(time.RFC3339), c.Streams, strings.Join(c.Services, ","))
	}
	tw.Flush()
}
