package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os/signal"

	"github.com/sallyport/sallyport/internal/admin"
	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/edge"
	"github.com/sallyport/sallyport/internal/enroll"
	"github.com/sallyport/sallyport/internal/join"
	"github.com/spf13/cobra"
)

// Default data directories, used when neither a flag nor the config file names one.
const (
	defaultEdgeData      = "/var/lib/sallyport/edge"
	defaultConnectorData = "/var/lib/sallyport/connector"
)

func newEdgeCmd() *cobra.Command {
	var (
		file     string
		cfg      config.Edge
		expose   []string
		logs     logFlags
		allowRA  bool
		joinFile string
	)
	cmd := &cobra.Command{
		Use:   "edge",
		Short: "Run the edge: accept connector tunnels and client connections (DMZ)",
		Example: `  sallyport edge --data /var/lib/sallyport/edge --advertise edge.example.com:5500 --expose db=:15432
  sallyport edge --config /etc/sallyport/edge.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// A SIGHUP before the edge serves must not end it.
			hup := notifyHangup()
			defer signal.Stop(hup)
			// load reads the file and lays the flags over it, at start
			// and again for each reload.
			load := func() (config.Edge, error) {
				c, err := readConfig(file, config.ReadEdge)
				if err != nil {
					return c, err
				}
				set := overlay{cmd.Flags(), &c.Origin}.set
				set("data", "data_dir", func() { c.DataDir = cfg.DataDir })
				set("tunnel-listen", "tunnel.listen", func() { c.Tunnel.Listen = cfg.Tunnel.Listen })
				set("advertise", "tunnel.advertise", func() { c.Tunnel.Advertise = cfg.Tunnel.Advertise })
				set("keepalive-interval", "tunnel.keepalive_interval", func() { c.Tunnel.KeepaliveInterval = cfg.Tunnel.KeepaliveInterval })
				set("keepalive-timeout", "tunnel.keepalive_timeout", func() { c.Tunnel.KeepaliveTimeout = cfg.Tunnel.KeepaliveTimeout })
				set("admin-listen", "admin.listen", func() { c.Admin.Listen = cfg.Admin.Listen })
				set("admin-allow-remote", "admin.allow_remote", func() { c.Admin.AllowRemote = allowRA })
				set("health-listen", "admin.health_listen", func() { c.Admin.HealthListen = cfg.Admin.HealthListen })
				set("drain-timeout", "drain_timeout", func() { c.DrainTimeout = cfg.DrainTimeout })
				set("max-clients", "limits.max_clients", func() { c.Limits.MaxClients = cfg.Limits.MaxClients })
				set("max-clients-per-source", "limits.max_clients_per_source", func() { c.Limits.MaxClientsPerSource = cfg.Limits.MaxClientsPerSource })
				set("connector-certificate-ttl", "connector_certificate_ttl", func() { c.ConnectorCertificateTTL = cfg.ConnectorCertificateTTL })
				set("cluster-listen", "cluster.listen", func() { c.Cluster.Listen = cfg.Cluster.Listen })
				set("cluster-advertise", "cluster.advertise", func() { c.Cluster.Advertise = cfg.Cluster.Advertise })
				set("cluster-route", "cluster.routes", func() { c.Cluster.Routes = cfg.Cluster.Routes })
				set("log-format", "log.format", func() { c.Log.Format = logs.format })
				set("log-level", "log.level", func() { c.Log.Level = logs.level })
				for _, e := range expose {
					name, svc, err := config.ParseExpose(e)
					if err != nil {
						return c, err
					}
					if c.Services == nil {
						c.Services = map[string]config.EdgeService{}
					}
					c.Services[name] = svc
					c.Origin.SetFlag("services."+name, "--expose")
				}
				if c.DataDir == "" {
					c.DataDir = defaultEdgeData
				}
				c.ApplyDefaults()
				// Every problem at once, log keys with file and line too,
				// before the logger is built from them.
				return c, c.Validate()
			}
			c, err := load()
			if err != nil {
				return err
			}
			log, err := newLogger(cmd.ErrOrStderr(), c.Log.Format, c.Log.Level)
			if err != nil {
				return err
			}
			if joinFile != "" {
				if err := joinCluster(cmd.Context(), c, joinFile, log); err != nil {
					return err
				}
			}
			for {
				e, err := edge.New(c, log)
				if err != nil {
					return err
				}
				e.LoadConfigWith(load)
				err = runUntilDone(cmd.Context(), withHangups(hup, e.Run, func(ctx context.Context) {
					e.Reload(admin.WithActor(ctx, "signal SIGHUP")) // logged and audited
				}))
				if !errors.Is(err, edge.ErrBecomeMember) {
					return err
				}
				// A single edge let its first member join: it starts
				// again, its store now a cluster member.
			}
		},
	}
	f := cmd.Flags()
	f.StringVarP(&file, "config", "c", "", "YAML config file (flags override its values)")
	f.StringVar(&cfg.DataDir, "data", "", "data directory: CA, certificates, admin token, state (default "+defaultEdgeData+")")
	f.StringVar(&cfg.Tunnel.Listen, "tunnel-listen", "", "address connectors dial (default "+config.DefaultTunnelListen+")")
	f.StringSliceVar(&cfg.Tunnel.Advertise, "advertise", nil, "HOST:PORT connectors should dial (or wss://HOST[:PORT]/.sallyport/tunnel of an https listener), written into keyfiles (repeatable)")
	f.DurationVar(&cfg.Tunnel.KeepaliveInterval, "keepalive-interval", 0, "how often an idle tunnel is probed (default 5s)")
	f.DurationVar(&cfg.Tunnel.KeepaliveTimeout, "keepalive-timeout", 0, "silence after which a tunnel is declared dead (default 15s)")
	f.StringVar(&cfg.Admin.Listen, "admin-listen", "", "admin API address (default "+config.DefaultAdminListen+")")
	f.BoolVar(&allowRA, "admin-allow-remote", false, "allow a non-loopback admin API address")
	f.StringVar(&cfg.Admin.HealthListen, "health-listen", "", "an address serving only the probes /livez and /readyz, for a balancer (default none: they are on the admin API)")
	f.DurationVar(&cfg.DrainTimeout, "drain-timeout", 0, "how long live connections may finish after SIGTERM (default 30s)")
	f.IntVar(&cfg.Limits.MaxClients, "max-clients", 0, "client connections of all public listeners together (default 4096)")
	f.IntVar(&cfg.Limits.MaxClientsPerSource, "max-clients-per-source", 0, "client connections from one IP address (default 256)")
	f.DurationVar(&cfg.ConnectorCertificateTTL, "connector-certificate-ttl", 0, "how long a connector certificate is valid; connectors renew it online after two thirds (default 168h)")
	f.StringVar(&joinFile, "join", "", "join keyfile (from sallyport edges join-token on an edge of the cluster): make this new edge a member of that cluster, then run; a data directory that joined already just runs")
	f.StringVar(&cfg.Cluster.Listen, "cluster-listen", "", "the embedded NATS server's cluster port, e.g. :6222 (reachable from the other edges only)")
	f.StringVar(&cfg.Cluster.Advertise, "cluster-advertise", "", "HOST:PORT the other members dial to reach this edge's cluster port")
	f.StringSliceVar(&cfg.Cluster.Routes, "cluster-route", nil, "HOST:PORT of another member's cluster port (repeatable); a join supplies them too")
	f.StringArrayVar(&expose, "expose", nil, "NAME=ADDRESS: a public TCP listener for service NAME, e.g. db=:15432 (repeatable)")
	logs.register(cmd)
	return cmd
}

// joinCluster makes the edge of config c a member of the cluster of the
// join keyfile, once (join.Redeem): a data directory that joined already
// is left as it is. An edge on an external NATS (store.url) needs no
// cluster port: it joins edges on that store and gets the CA.
func joinCluster(ctx context.Context, c config.Edge, keyfile string, log *slog.Logger) error {
	external := c.Store.URL != ""
	if !external && c.Cluster.Listen == "" {
		return errors.New("--join makes this edge a member of a cluster of edges, whose embedded NATS servers talk on a cluster port: " +
			"set it (--cluster-listen :6222, or cluster.listen in the config) and the address the other members dial (--cluster-advertise HOST:6222); " +
			"or, for edges that share an external NATS, the store section (store.url) as the other edges have it")
	}
	id, err := edge.LoadOrCreateID(c.DataDir)
	if err != nil {
		return err
	}
	o := join.Options{Keyfile: keyfile, DataDir: c.DataDir, Role: enroll.RoleEdge, Name: join.NamePrefix + id, External: external, Logger: log}
	if external {
		o.SameStore = func(ctx context.Context, tokenID string) error { return edge.SameStore(ctx, c, o.Name, tokenID, log) }
	} else {
		o.Advertise = edge.ClusterAdvertise(c.Cluster, net.InterfaceAddrs)
	}
	_, err = join.Redeem(ctx, o)
	return err
}
