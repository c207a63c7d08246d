package main

import (
	"context"
	"os/signal"

	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/connector"
	"github.com/spf13/cobra"
)

func newConnectorCmd() *cobra.Command {
	var flags connectorFlags
	cmd := &cobra.Command{
		Use:   "connector",
		Short: "Run a connector: dial out to the edge and carry its streams to local back-ends (trusted network)",
		Example: `  sallyport connector --keyfile site-a.keyfile --data /var/lib/sallyport/connector --service db=127.0.0.1:5432
  sallyport connector --config /etc/sallyport/connector.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// A SIGHUP before the connector serves must not end it.
			hup := notifyHangup()
			defer signal.Stop(hup)
			// load reads the file and lays the flags over it, at start
			// and again for each reload.
			load := func() (config.Connector, error) { return flags.config(cmd) }
			c, err := load()
			if err != nil {
				return err
			}
			log, err := newLogger(cmd.ErrOrStderr(), c.Log.Format, c.Log.Level)
			if err != nil {
				return err
			}
			conn, err := connector.New(c, log)
			if err != nil {
				return err
			}
			conn.LoadConfigWith(load)
			return runUntilDone(cmd.Context(), withHangups(hup, conn.Run, func(context.Context) {
				conn.Reload() // logged
			}))
		},
	}
	flags.register(cmd)
	return cmd
}

// connectorFlags are the connector's flags. `sallyport doctor` has the
// same ones, so that it checks exactly what `sallyport connector` with
// the same command line would run with.
type connectorFlags struct {
	file     string
	cfg      config.Connector
	services []string
	logs     logFlags
}

// config reads the config file, if any, lays the flags given over it,
// fills in the defaults and validates the result, reporting every
// problem at once (log keys too, with file and line, before a logger is
// built from them).
func (f *connectorFlags) config(cmd *cobra.Command) (config.Connector, error) {
	cfg := f.cfg
	c, err := readConfig(f.file, config.ReadConnector)
	if err != nil {
		return c, err
	}
	set := overlay{cmd.Flags(), &c.Origin}.set
	set("keyfile", "keyfile", func() { c.Keyfile = cfg.Keyfile })
	set("data", "data_dir", func() { c.DataDir = cfg.DataDir })
	set("edge", "edges", func() { c.Edges = cfg.Edges })
	set("keepalive-interval", "tunnel.keepalive_interval", func() { c.Tunnel.KeepaliveInterval = cfg.Tunnel.KeepaliveInterval })
	set("keepalive-timeout", "tunnel.keepalive_timeout", func() { c.Tunnel.KeepaliveTimeout = cfg.Tunnel.KeepaliveTimeout })
	set("backoff-max", "tunnel.backoff_max", func() { c.Tunnel.BackoffMax = cfg.Tunnel.BackoffMax })
	set("pool", "tunnel.pool", func() { c.Tunnel.Pool = cfg.Tunnel.Pool })
	set("proxy", "tunnel.proxy", func() { c.Tunnel.Proxy = cfg.Tunnel.Proxy })
	set("websocket-ca", "tunnel.websocket_ca", func() { c.Tunnel.WebSocketCA = cfg.Tunnel.WebSocketCA })
	set("health-listen", "health.listen", func() { c.Health.Listen = cfg.Health.Listen })
	set("metrics-listen", "metrics.listen", func() { c.Metrics.Listen = cfg.Metrics.Listen })
	set("drain-timeout", "drain_timeout", func() { c.DrainTimeout = cfg.DrainTimeout })
	set("log-format", "log.format", func() { c.Log.Format = f.logs.format })
	set("log-level", "log.level", func() { c.Log.Level = f.logs.level })
	for _, s := range f.services {
		name, svc, err := config.ParseService(s)
		if err != nil {
			return c, err
		}
		if c.Services == nil {
			c.Services = map[string]config.ConnectorService{}
		}
		c.Services[name] = svc
		c.Origin.SetFlag("services."+name, "--service")
	}
	if c.DataDir == "" {
		c.DataDir = defaultConnectorData
	}
	c.ApplyDefaults()
	return c, c.Validate()
}

func (f *connectorFlags) register(cmd *cobra.Command) {
	fs := cmd.Flags()
	cfg := &f.cfg
	fs.StringVarP(&f.file, "config", "c", "", "YAML config file (flags override its values)")
	fs.StringVar(&cfg.Keyfile, "keyfile", "", "keyfile from 'sallyport token create', needed for the first run")
	fs.StringVar(&cfg.DataDir, "data", "", "data directory: the connector's key and certificate (default "+defaultConnectorData+")")
	fs.StringSliceVar(&cfg.Edges, "edge", nil, "HOST:PORT of an edge's tunnel port, or wss://HOST[:PORT]/.sallyport/tunnel of its https listener, overriding the keyfile's (repeatable)")
	fs.DurationVar(&cfg.Tunnel.KeepaliveInterval, "keepalive-interval", 0, "how often an idle tunnel is probed (default 5s)")
	fs.DurationVar(&cfg.Tunnel.KeepaliveTimeout, "keepalive-timeout", 0, "silence after which a tunnel is declared dead (default 15s)")
	fs.DurationVar(&cfg.Tunnel.BackoffMax, "backoff-max", 0, "longest wait between reconnects (default 30s)")
	fs.IntVar(&cfg.Tunnel.Pool, "pool", 0, "tunnel connections to keep to each edge; streams spread over them and over cores (default 1)")
	fs.StringVar(&cfg.Tunnel.Proxy, "proxy", "", "reach the edges through this proxy: http://[USER:PASSWORD@]HOST:PORT or socks5[h]://…; 'direct' ignores HTTPS_PROXY/ALL_PROXY (default: the environment)")
	fs.StringVar(&cfg.Tunnel.WebSocketCA, "websocket-ca", "", "PEM file of the CA that issued the certificate of the edge's https listener, for wss:// edges (default: the system's roots)")
	fs.StringVar(&cfg.Metrics.Listen, "metrics-listen", "", "serve Prometheus metrics at GET /metrics on this loopback address, such as 127.0.0.1:9464 (default: none, the connector listens on nothing)")
	fs.StringVar(&cfg.Health.Listen, "health-listen", "", "serve the probes /livez and /readyz (ready: a tunnel up) on this loopback address, such as 127.0.0.1:5502 (default: none, the connector listens on nothing)")
	fs.DurationVar(&cfg.DrainTimeout, "drain-timeout", 0, "how long live streams may finish after SIGTERM (default 30s)")
	fs.StringArrayVar(&f.services, "service", nil, "NAME=HOST:PORT: a back-end this connector allows, e.g. db=127.0.0.1:5432 (repeatable)")
	f.logs.register(cmd)
}
