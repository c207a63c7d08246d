package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/sallyport/sallyport/internal/admin"
	"github.com/sallyport/sallyport/internal/atomicfile"
	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/connector"
	"github.com/sallyport/sallyport/internal/edge"
	"github.com/sallyport/sallyport/internal/samplelog"
	"github.com/spf13/cobra"
)

func newDemoCmd() *cobra.Command {
	var (
		webPort, echoPort, pagePort int
		runFor                      time.Duration
		logs                        logFlags
	)
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run an edge, a connector and sample back-ends in one process on loopback, and print what to try",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			level := logs.level
			if level == "" {
				level = "warn"
			}
			log, err := newLogger(cmd.ErrOrStderr(), logs.format, level)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if runFor > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, runFor)
				defer cancel()
			}
			return runDemo(ctx, cmd.OutOrStdout(), log, demoPorts{web: webPort, echo: echoPort, page: pagePort})
		},
	}
	cmd.Flags().IntVar(&webPort, "web-port", 18080, "public port of the sample web service (0: any free port)")
	cmd.Flags().IntVar(&echoPort, "echo-port", 17007, "public port of the sample echo service (0: any free port)")
	cmd.Flags().IntVar(&pagePort, "page-port", 18081, "port of the edge's own host, localhost, which serves session links and their page (0: any free port)")
	cmd.Flags().DurationVar(&runFor, "run-for", 0, "stop by itself after this long (default: run until Ctrl-C)")
	logs.register(cmd)
	cmd.Flags().Lookup("log-level").Usage = "log level: debug, info, warn or error (default warn)"
	return cmd
}

// demoPorts are the public ports the demo tries first (0: any free port).
type demoPorts struct{ web, echo, page int }

// demoLogInterval is how often the demo's logs back-end writes a line.
const demoLogInterval = 200 * time.Millisecond

// runDemo runs the demo until ctx ends and cleans up after itself.
func runDemo(ctx context.Context, out io.Writer, log *slog.Logger, ports demoPorts) error {
	dir, err := os.MkdirTemp("", "sallyport-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	web, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	webSrv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "Hello from the trusted network! You reached %s through sallyport, from %s.\n", web.Addr(), r.RemoteAddr)
	}), ReadHeaderTimeout: 10 * time.Second}
	wg.Go(func() { webSrv.Serve(web) })
	defer webSrv.Close()
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer echo.Close()
	wg.Go(func() { serveEcho(echo) })
	logsL, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	logs := &samplelog.Log{Interval: demoLogInterval}
	wg.Go(func() { logs.Serve(ctx, logsL) })

	ecfg := config.Edge{
		DataDir: filepath.Join(dir, "edge"),
		Tunnel:  config.EdgeTunnel{Listen: "127.0.0.1:0"},
		Admin:   config.Admin{Listen: "127.0.0.1:0"},
		// The edge's own host name: session links and their page.
		Listeners: []config.Listener{{Kind: config.KindHTTP, Listen: freeOrAny(ports.page), EdgeHosts: []string{"localhost"}}},
		Services: map[string]config.EdgeService{
			"web":  {Listen: freeOrAny(ports.web)},
			"echo": {Listen: freeOrAny(ports.echo)},
			"logs": {Policy: config.Policy{RequireSession: true}},
		},
		DrainTimeout: 2 * time.Second,
	}
	e, err := edge.New(ecfg, log.With("role", "edge"))
	if err != nil {
		return err
	}
	edgeErr := make(chan error, 1)
	wg.Go(func() { edgeErr <- e.Run(ctx) })
	select {
	case <-e.Ready():
	case err := <-edgeErr:
		return fmt.Errorf("edge: %w", err)
	}

	token, err := e.AdminToken()
	if err != nil {
		return err
	}
	ac := &admin.Client{Addr: e.AdminAddr().String(), Token: token}
	kf, err := ac.CreateKeyfile(ctx, admin.TokenRequest{Name: "demo-site", TTL: "10m", Services: []string{"web", "echo", "logs"}})
	if err != nil {
		return err
	}
	keyfile := filepath.Join(dir, "demo-site.keyfile")
	if err := atomicfile.Write(keyfile, kf, 0o600); err != nil {
		return err
	}

	ccfg := config.Connector{
		Keyfile: keyfile,
		DataDir: filepath.Join(dir, "connector"),
		Services: map[string]config.ConnectorService{
			"web":  {Address: web.Addr().String()},
			"echo": {Address: echo.Addr().String()},
			"logs": {Address: logsL.Addr().String()},
		},
		DrainTimeout: 2 * time.Second,
	}
	c, err := connector.New(ccfg, log.With("role", "connector"))
	if err != nil {
		return err
	}
	connErr := make(chan error, 1)
	wg.Go(func() { connErr <- c.Run(ctx) })
	wctx, wcancel := context.WithTimeout(ctx, 15*time.Second)
	err = c.WaitTunnels(wctx, 1)
	wcancel()
	if err != nil {
		cancel()
		return fmt.Errorf("the demo connector did not come up: %w", errors.Join(err, <-connErr))
	}

	sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
	link, err := ac.CreateSession(sctx, admin.SessionRequest{Service: "logs", TTL: demoSessionTTL.String()})
	scancel()
	if err != nil {
		cancel()
		return fmt.Errorf("the demo's session link: %w", err)
	}

	fmt.Fprintf(out, `sallyport demo: an edge, a connector (enrolled with a fresh one-time keyfile
that grants it the services web, echo and logs) and three sample back-ends
are running on this machine. The back-ends listen on
random loopback ports that only the connector knows; clients use the edge.

Try, in another terminal:

  curl http://%s/
      the web back-end, reached through the tunnel
  nc -N %s     (or: curl telnet://%s)
      the echo back-end: type a line and get it back (Ctrl-D ends)
  %[4]s status --data %[5]s
      the edge's view: services and the connected connector
  %[4]s connectors list --data %[5]s
      the enrolled connector: its grants, tunnels and certificate expiry
  %[4]s connectors ungrant demo-site echo --data %[5]s
      the edge stops routing echo through it at once; "connectors grant"
      gives it back, without a reconnect

Open in a browser (one use, within %[7]s):

  %[6]s
      a live tail of the logs back-end (a line every 200ms), over a one-time
      session link; open it a second time and the page says it was used
  %[4]s sessions create --service logs --data %[5]s
      another link: logs is reachable only through one (require_session)
  http://%[8]s/ui/
      the edge's dashboard: live connections, connectors (revoke one there),
      keyfiles, grants, sessions, the audit trail; log in with the token
      that "cat %[9]s" prints

Press Ctrl-C to stop.
`, e.ServiceAddr("web"), hostPortArgs(e.ServiceAddr("echo")), e.ServiceAddr("echo"), selfCommand(), ecfg.DataDir, link.Page, demoSessionTTL,
		e.AdminAddr(), filepath.Join(ecfg.DataDir, edge.AdminTokenFile))

	select {
	case <-ctx.Done():
	case err := <-edgeErr:
		return fmt.Errorf("edge stopped: %w", err)
	case err := <-connErr:
		return fmt.Errorf("connector stopped: %w", err)
	}
	fmt.Fprintln(out, "\nstopping...")
	return nil
}

// demoSessionTTL is how long the demo's printed link may be used.
const demoSessionTTL = 30 * time.Minute

// freeOrAny returns 127.0.0.1:port if that port is free, else 127.0.0.1:0.
func freeOrAny(port int) string {
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	if l, err := net.Listen("tcp", addr); err == nil {
		l.Close()
		return addr
	}
	return "127.0.0.1:0"
}

// selfCommand is how the user can run this binary again: as they invoked
// it, or "go run ./cmd/sallyport" when it was built by go run.
func selfCommand() string {
	if strings.Contains(os.Args[0], string(filepath.Separator)+"go-build") {
		return "go run ./cmd/sallyport"
	}
	return os.Args[0]
}

func hostPortArgs(a net.Addr) string {
	h, p, _ := net.SplitHostPort(a.String())
	return h + " " + p
}

// serveEcho echoes every connection until l is closed, keeping half-close.
func serveEcho(l net.Listener) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		wg.Go(func() {
			defer c.Close()
			io.Copy(c, c)
			if tc, ok := c.(*net.TCPConn); ok {
				tc.CloseWrite()
			}
		})
	}
}
