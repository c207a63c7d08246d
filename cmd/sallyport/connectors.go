package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sallyport/sallyport/internal/admin"
	"github.com/sallyport/sallyport/internal/store"
	"github.com/spf13/cobra"
)

// adminCmd is a subcommand that calls the edge's admin API and prints the
// result, as JSON with --json.
func adminCmd(use, short string, args cobra.PositionalArgs, run func(cmd *cobra.Command, c *admin.Client, args []string) (any, error), print func(io.Writer, any)) *cobra.Command {
	var (
		af     adminFlags
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  args,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := af.client()
			if err != nil {
				return err
			}
			v, err := run(cmd, c, args)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(v)
			}
			print(cmd.OutOrStdout(), v)
			return nil
		},
	}
	af.register(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newConnectorsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "connectors", Short: "List enrolled connectors, change what they may serve, revoke them"}
	printOne := func(w io.Writer, v any) { printConnectors(w, []admin.Connector{v.(admin.Connector)}) }
	grant := func(on bool) func(*cobra.Command, *admin.Client, []string) (any, error) {
		return func(cmd *cobra.Command, c *admin.Client, args []string) (any, error) {
			return c.Grant(cmd.Context(), args[0], args[1], on)
		}
	}
	cmd.AddCommand(
		adminCmd("list", "List enrolled connectors: grants, tunnels, last seen, certificate expiry", cobra.NoArgs,
			func(cmd *cobra.Command, c *admin.Client, _ []string) (any, error) { return c.Connectors(cmd.Context()) },
			func(w io.Writer, v any) { printConnectors(w, v.([]admin.Connector)) }),
		adminCmd("grant NAME|ID SERVICE", "Let a connector offer a service (its live tunnels serve it at once)", cobra.ExactArgs(2),
			grant(true), printOne),
		adminCmd("ungrant NAME|ID SERVICE", "Stop a connector from offering a service (routes through it are dropped at once)", cobra.ExactArgs(2),
			grant(false), printOne),
		adminCmd("revoke NAME|ID", "Revoke a connector: its tunnels close now and it is refused from then on", cobra.ExactArgs(1),
			func(cmd *cobra.Command, c *admin.Client, args []string) (any, error) {
				return c.RevokeConnector(cmd.Context(), args[0])
			}, printOne),
	)
	return cmd
}

func newTokensListCmd() *cobra.Command {
	return adminCmd("list", "List enrollment tokens (never their secrets)", cobra.NoArgs,
		func(cmd *cobra.Command, c *admin.Client, _ []string) (any, error) { return c.Tokens(cmd.Context()) },
		func(w io.Writer, v any) { printTokens(w, v.([]admin.Token)) })
}

func newTokensRevokeCmd() *cobra.Command {
	return adminCmd("revoke ID", "Revoke an unused token: its keyfile can no longer enroll", cobra.ExactArgs(1),
		func(cmd *cobra.Command, c *admin.Client, args []string) (any, error) {
			return c.RevokeToken(cmd.Context(), args[0])
		},
		func(w io.Writer, v any) { printTokens(w, []admin.Token{v.(admin.Token)}) })
}

// when prints a time, or "-" for the zero time.
func when(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// list prints names joined by commas, or "-" for none.
func list(names []string) string {
	if s := strings.Join(names, ","); s != "" {
		return s
	}
	return "-"
}

func printConnectors(w io.Writer, cs []admin.Connector) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tID\tGRANTS\tTUNNELS\tLAST SEEN\tCERT EXPIRES\tREVOKED")
	for _, c := range cs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", c.Name, c.ID, list(c.Grants), c.Tunnels, when(c.LastSeen), when(c.NotAfter), when(c.RevokedAt))
	}
	tw.Flush()
}

func printTokens(w io.Writer, ts []admin.Token) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tKIND\tNAME\tSTATE\tGRANTS\tCREATED\tEXPIRES\tUSED BY")
	for _, t := range ts {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, t.Kind, list([]string{t.Name}), t.State, list(t.Grants), when(t.CreatedAt), when(t.ExpiresAt), list([]string{t.UsedBy}))
	}
	tw.Flush()
}

func newAuditCmd() *cobra.Command {
	var (
		af     adminFlags
		follow bool
		since  time.Duration
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Read the audit trail: enrollments, grants, revocations, refused hellos, admin calls",
		Example: `  sallyport audit --since 24h
  sallyport audit --follow --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := af.client()
			if err != nil {
				return err
			}
			var from time.Time
			if since > 0 {
				from = time.Now().Add(-since)
			}
			w := cmd.OutOrStdout()
			enc := json.NewEncoder(w)
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			if !asJSON {
				fmt.Fprintln(tw, "TIME\tACTOR\tACTION\tSUBJECT\tRESULT\tDETAIL")
			}
			err = c.Audit(cmd.Context(), from, follow, func(ev store.AuditEvent) error {
				if asJSON {
					return enc.Encode(ev)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", ev.Time.UTC().Format(time.RFC3339), ev.Actor, ev.Action, ev.Subject, ev.Result, ev.Detail)
				if follow {
					return tw.Flush()
				}
				return nil
			})
			if ferr := tw.Flush(); err == nil {
				err = ferr
			}
			return err
		},
	}
	af.register(cmd)
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "wait for new events and print them as they come (Ctrl-C ends)")
	cmd.Flags().DurationVar(&since, "since", 0, "only events of the last DURATION, e.g. 1h (default: all that are kept)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON, one event a line")
	return cmd
}
