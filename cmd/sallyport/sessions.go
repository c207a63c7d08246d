package main

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/sallyport/sallyport/internal/admin"
	"github.com/spf13/cobra"
)

func newSessionsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "sessions", Aliases: []string{"session"}, Short: "Create one-time links to services (WebSocket, or a browser cookie for HTTP services), list and revoke them"}
	var (
		service, connector string
		ttl                time.Duration
	)
	create := adminCmd("create", "Create a one-time link to a service: wss://EDGE_HOST/s/<token>, whose first WebSocket client is carried, or for a service published by Host https://HOST/.sallyport/s/<token>, whose first use sets a cookie for that host until the session ends", cobra.NoArgs,
		func(cmd *cobra.Command, c *admin.Client, _ []string) (any, error) {
			return c.CreateSession(cmd.Context(), admin.SessionRequest{Service: service, TTL: ttl.String(), Connector: connector})
		},
		func(w io.Writer, v any) {
			s := v.(admin.Session)
			fmt.Fprintf(w, "%s\n", s.URL)
			fmt.Fprintf(w, "session %s for service %s, one use, until %s\n", s.ID, s.Service, when(s.ExpiresAt))
			if s.Subprotocol != "" {
				fmt.Fprintf(w, "or connect to /s/ on the same host with the WebSocket subprotocol %s\n", s.Subprotocol)
			} else {
				fmt.Fprintf(w, "its first use sets a cookie that admits requests to %s until then\n", s.Host)
			}
			if s.Page != "" {
				fmt.Fprintf(w, "or open in a browser, for a live view of what the service sends: %s\n", s.Page)
			}
		})
	create.Example = `  sallyport sessions create --service logs --ttl 5m
  sallyport sessions create --service logs --connector site-a --json`
	create.Flags().StringVar(&service, "service", "", "the service the link reaches (required)")
	create.Flags().StringVar(&connector, "connector", "", "carry the session through this connector only (its name)")
	create.Flags().DurationVar(&ttl, "ttl", admin.DefaultSessionTTL, "how long the link may be used (once)")
	create.MarkFlagRequired("service")
	cmd.AddCommand(create,
		adminCmd("list", "List sessions (never their tokens)", cobra.NoArgs,
			func(cmd *cobra.Command, c *admin.Client, _ []string) (any, error) { return c.Sessions(cmd.Context()) },
			func(w io.Writer, v any) { printSessions(w, v.([]admin.Session)) }),
		adminCmd("revoke ID", "Revoke a session: its link can no longer be used, and an HTTP session's cookie admits no more requests", cobra.ExactArgs(1),
			func(cmd *cobra.Command, c *admin.Client, args []string) (any, error) {
				return c.RevokeSession(cmd.Context(), args[0])
			},
			func(w io.Writer, v any) { printSessions(w, []admin.Session{v.(admin.Session)}) }),
	)
	return cmd
}

func printSessions(w io.Writer, ss []admin.Session) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSERVICE\tCONNECTOR\tSTATE\tCREATED\tEXPIRES\tUSED BY")
	for _, s := range ss {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.ID, s.Service, list([]string{s.Connector}), s.State, when(s.CreatedAt), when(s.ExpiresAt), list([]string{s.UsedBy}))
	}
	tw.Flush()
}
