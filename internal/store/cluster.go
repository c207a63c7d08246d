package store

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/sallyport/sallyport/internal/atomicfile"
)

// ClusterName is the NATS cluster name every edge and witness uses.
const ClusterName = "sallyport"

// ClusterFile is the file in a data directory where the join flow keeps the
// cluster's other members: {"routes": ["host:port", ...]}.
const ClusterFile = "cluster.json"

// clusterSubdir holds a cluster member's JetStream files, apart from a
// single node's (which the embedded server keeps in Dir itself), so that
// a store that became a member never reopens stale single-node data.
const clusterSubdir = "cluster"

// adoptedFile, in clusterSubdir, records that the single node's records
// were copied into the cluster, so that they are copied once.
const adoptedFile = "adopted-single-node"

// Cluster makes the embedded NATS server one member of a cluster of edges
// and witnesses, connected by routes on a cluster port with mutual TLS.
type Cluster struct {
	// Listen is the cluster port's address (host:port; port 0 picks one).
	Listen string
	// Advertise is the host:port other members dial to reach this one;
	// empty lets the server advertise its listen address (or, when that is
	// every interface, this host's addresses).
	Advertise string
	// Routes are other members' cluster addresses (host:port). With none,
	// the store runs as a single node and opens no cluster port: NATS
	// cannot form a JetStream cluster without a route (see Open).
	Routes []string
	// TLS is the cluster port's configuration, both to accept and to dial
	// routes: pki.RouteTLSConfig, so that only members holding a route
	// certificate of the edge CA form routes. Required.
	TLS *tls.Config
}

// clustered reports whether c makes the server a cluster member.
func (c *Cluster) clustered() bool { return c != nil && len(c.Routes) > 0 }

// clusterOptions sets the server options of a cluster member: the cluster
// port with mutual TLS, its routes, and a client port on loopback. The
// client port is needed because nats-server starts routing only after its
// client listener is up (DontListen leaves routing waiting forever); it is
// bound to 127.0.0.1 on a random port and requires token, a secret the
// process holds in memory only, so no other local user reaches the store.
func (c *Cluster) clusterOptions(o *server.Options, token string) error {
	if c.TLS == nil {
		return errors.New("open store: cluster: no TLS configuration; the cluster port never runs without mutual TLS")
	}
	host, port, err := splitHostPort(c.Listen)
	if err != nil {
		return fmt.Errorf("open store: cluster listen address %q: %w", c.Listen, err)
	}
	var routes []*url.URL
	for _, r := range c.Routes {
		if _, _, err := splitHostPort(r); err != nil {
			return fmt.Errorf("open store: cluster route %q: %w", r, err)
		}
		routes = append(routes, &url.URL{Scheme: "nats-route", Host: r})
	}
	o.DontListen = false
	o.Host, o.Port = "127.0.0.1", server.RANDOM_PORT
	o.Authorization = token
	o.Cluster = server.ClusterOpts{
		Name:       ClusterName,
		Host:       host,
		Port:       port,
		Advertise:  c.Advertise,
		TLSConfig:  c.TLS.Clone(),
		TLSTimeout: 5,
		// Clients are this process only: do not gossip client URLs.
		NoAdvertise: true,
	}
	o.Routes = routes
	return nil
}

// splitHostPort splits host:port and checks the port; port 0 means a
// random one (server.RANDOM_PORT).
func splitHostPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("bad port %q", p)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	return host, port, nil
}

// ReadClusterFile returns the routes in a cluster file (see ClusterFile):
// none when it does not exist; an error naming the file when it cannot
// be read or decoded.
func ReadClusterFile(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read cluster routes: %w", err)
	}
	var f struct {
		Routes []string `json:"routes"`
	}
	// Other fields are allowed: the join flow that writes the file may
	// keep more there.
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("read cluster routes from %s: %w; it should be {\"routes\": [\"host:port\", ...]}", path, err)
	}
	for i, r := range f.Routes {
		if _, _, err := splitHostPort(r); err != nil {
			return nil, fmt.Errorf("read cluster routes from %s: routes[%d] %q: %w; give host:port", path, i, r, err)
		}
	}
	return f.Routes, nil
}

// WriteClusterFile writes routes into dataDir's cluster file (see
// ClusterFile), mode 0600.
func WriteClusterFile(dataDir string, routes []string) error {
	b, err := json.MarshalIndent(struct {
		Routes []string `json:"routes"`
	}{routes}, "", "  ")
	if err != nil {
		return fmt.Errorf("write the cluster routes: %w", err)
	}
	if err := atomicfile.Write(filepath.Join(dataDir, ClusterFile), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("write the cluster routes: %w", err)
	}
	return nil
}

// Routes returns the configured routes followed by those in dataDir's
// cluster file (see ClusterFile) that are not among them.
func Routes(configured []string, dataDir string) ([]string, error) {
	joined, err := ReadClusterFile(filepath.Join(dataDir, ClusterFile))
	if err != nil {
		return nil, err
	}
	routes := slices.Clone(configured)
	for _, r := range joined {
		if !slices.Contains(routes, r) {
			routes = append(routes, r)
		}
	}
	return routes, nil
}

// wasMember reports whether dir holds a cluster member's files.
func wasMember(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, clusterSubdir, "jetstream"))
	return err == nil
}

// hasSingleNode reports whether dir holds a single node's files.
func hasSingleNode(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, "jetstream"))
	return err == nil
}
