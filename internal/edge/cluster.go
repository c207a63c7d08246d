package edge

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"slices"
	"time"

	"github.com/sallyport/sallyport/internal/admin"
	"github.com/sallyport/sallyport/internal/metrics"
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
	js, ok := e.plainStore().(interface{ ClusterStatus() store.ClusterStatus })
	if !ok {
		return nil
	}
	cs := js.ClusterStatus()
	if !cs.Member && e.cfg.Store.URL == "" {
		return nil
	}
	return &admin.StoreStatus{Leader: cs.Leader, Servers: cs.Servers, Online: cs.Online}
}

// plainStore is the store as opened, for its methods beyond
// store.Store's (cluster status, quorum), which the timed store e.st
// does not have.
func (e *Edge) plainStore() store.Store {
	if w, ok := e.st.(interface{ Unwrap() store.Store }); ok {
		return w.Unwrap()
	}
	return e.st
}

// storeCluster is storeStatus for the metrics; ok is false for a single
// node. It is read by scrapes, which the admin servers serve only once
// the store is open.
func (e *Edge) storeCluster() (metrics.StoreCluster, bool) {
	st := e.storeStatus()
	if st == nil {
		return metrics.StoreCluster{}, false
	}
	return metrics.StoreCluster{Servers: st.Servers, Online: st.Online, Leader: st.Leader != ""}, true
}

// ErrBecomeMember ends Run when this edge, a single node with a cluster
// port, has let the first other member join: NATS forms a cluster only
// with a route, so its store must start again with one. The caller runs a
// new Edge on the same config and data directory at once (cmd does).
var ErrBecomeMember = errors.New("restart as a cluster member")

// memberJoined records a new member's cluster address in this edge's
// cluster file, so that its store dials it at every start. When this
// edge is a single node still, it restarts as a member
// (ErrBecomeMember) once the new member's cluster port answers: a joiner
// that never comes up leaves it serving alone, as before.
func (e *Edge) memberJoined(ctx context.Context, advertise string) {
	path := filepath.Join(e.cfg.DataDir, store.ClusterFile)
	routes, err := store.ReadClusterFile(path)
	if err == nil && !slices.Contains(routes, advertise) {
		err = store.WriteClusterFile(e.cfg.DataDir, append(routes, advertise))
	}
	if err != nil {
		e.log.Warn("join: the new member's address is not kept in this edge's cluster file; add it to cluster.routes", "member", advertise, "err", err)
	}
	js, ok := e.plainStore().(interface{ ClusterStatus() store.ClusterStatus })
	if !ok || js.ClusterStatus().Member || e.cfg.Store.URL != "" {
		return
	}
	e.log.Info("join: this edge becomes a cluster member once the new member's cluster port answers", "member", advertise)
	e.handlers.Go(func() {
		t := time.NewTicker(memberPoll)
		defer t.Stop()
		for end := time.Now().Add(memberWait); time.Now().Before(end); {
			d := net.Dialer{Timeout: time.Second}
			if c, err := d.DialContext(ctx, "tcp", advertise); err == nil {
				c.Close()
				e.becomeMember()
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
		e.log.Warn("join: the new member's cluster port did not answer; this edge stays a single node until it restarts with a route", "member", advertise, "waited", memberWait)
	})
}

// How often and how long a single edge dials a new member's cluster port
// before it restarts as a member (memberJoined).
const (
	memberPoll = 500 * time.Millisecond
	memberWait = 10 * time.Minute
)
