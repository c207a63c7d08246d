package edge

import (
	"net"
	"path/filepath"

	"github.com/sallyport/sallyport/internal/admin"
	"github.com/sallyport/sallyport/internal/pki"
	"github.com/sallyport/sallyport/internal/store"
)

// clusterOptions makes the embedded store's cluster options from the
// config's cluster section, or nil without a cluster port. The routes are
// cluster.routes and those the join flow keeps in the data directory's
// cluster.json; the route certificate is this edge's own, issued from its
// CA (reissued when its addresses change or it ages, see
// pki.LoadOrIssueRoute). Call it after e.id and e.ca are set.
func (e *Edge) clusterOptions() (*store.Cluster, error) {
	c := e.cfg.Cluster
	if c.Listen == "" {
		return nil, nil
	}
	routes, err := store.Routes(c.Routes, e.cfg.DataDir)
	if err != nil {
		return nil, err
	}
	cert, err := pki.LoadOrIssueRoute(filepath.Join(e.cfg.DataDir, "pki"), e.ca, "sallyport-"+e.id, routeHosts(c.Advertise, c.Listen), e.now())
	if err != nil {
		return nil, err
	}
	return &store.Cluster{
		Listen:    c.Listen,
		Advertise: c.Advertise,
		Routes:    routes,
		TLS:       pki.RouteTLSConfig(e.ca.Certificate(), cert),
	}, nil
}

// routeHosts names the hosts a route certificate lists: the advertised
// cluster host, else the listen host when it is a specific one. The names
// are informative (members check the CA and the route usage, not host
// names), so an empty list is fine.
func routeHosts(advertise, listen string) []string {
	for _, a := range []string{advertise, listen} {
		host, _, err := net.SplitHostPort(a)
		if err != nil || host == "" {
			continue
		}
		if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
			continue
		}
		return []string{host}
	}
	return nil
}

// storeStatus reports the store's cluster for the admin status, or nil
// for a single node.
func (e *Edge) storeStatus() *admin.StoreStatus {
	js, ok := e.st.(interface{ ClusterStatus() store.ClusterStatus })
	if !ok {
		return nil
	}
	cs := js.ClusterStatus()
	if !cs.Member && e.cfg.Store.URL == "" {
		return nil
	}
	return &admin.StoreStatus{Leader: cs.Leader, Servers: cs.Servers, Online: cs.Online}
}
