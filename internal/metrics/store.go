package metrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sallyport/sallyport/internal/store"
)

// storeMetrics count and time the calls to an edge's store.
type storeMetrics struct {
	ops      *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newStoreMetrics(f factory) *storeMetrics {
	return &storeMetrics{
		ops: f.counterVec("sallyport_store_operations_total",
			"Calls to the shared store, by operation and result (ok or error; a caller's own check refusing, such as a used token, is an error too).", "operation", "result"),
		duration: f.histogramVec("sallyport_store_operation_duration_seconds",
			"How long calls to the shared store took, by operation (a watch: its start only).", latencyBuckets, "operation"),
	}
}

// observe records one call of op that started at start and ended with err.
func (m *storeMetrics) observe(op string, start time.Time, err error) {
	m.duration.WithLabelValues(op).Observe(time.Since(start).Seconds())
	m.ops.WithLabelValues(op, result(err)).Inc()
}

// timed runs call as operation op and records it.
func timed[T any](m *storeMetrics, op string, call func() (T, error)) (T, error) {
	start := time.Now()
	v, err := call()
	m.observe(op, start, err)
	return v, err
}

// timedErr is timed for a call that returns only an error.
func timedErr(m *storeMetrics, op string, call func() error) error {
	start := time.Now()
	err := call()
	m.observe(op, start, err)
	return err
}

// Store returns st with every call counted and timed in the edge's
// metrics. Methods beyond store.Store's (a JetStream's ClusterStatus)
// are not on the result: assert them on its Unwrap(), which is st.
func (m *Edge) Store(st store.Store) store.Store { return &timedStore{Store: st, m: m.store} }

// Unwrap returns the store whose calls s times.
func (s *timedStore) Unwrap() store.Store { return s.Store }

// timedStore is a store.Store whose calls are counted and timed.
type timedStore struct {
	store.Store
	m *storeMetrics
}

func (s *timedStore) CreateToken(ctx context.Context, t store.Token) error {
	return timedErr(s.m, "create_token", func() error { return s.Store.CreateToken(ctx, t) })
}

func (s *timedStore) GetToken(ctx context.Context, id string) (store.Token, error) {
	return timed(s.m, "get_token", func() (store.Token, error) { return s.Store.GetToken(ctx, id) })
}

func (s *timedStore) ConsumeToken(ctx context.Context, id string, check func(store.Token) error, by string, at time.Time) (store.Token, error) {
	return timed(s.m, "consume_token", func() (store.Token, error) { return s.Store.ConsumeToken(ctx, id, check, by, at) })
}

func (s *timedStore) ListTokens(ctx context.Context) ([]store.Token, error) {
	return timed(s.m, "list_tokens", func() ([]store.Token, error) { return s.Store.ListTokens(ctx) })
}

func (s *timedStore) PruneTokens(ctx context.Context, before time.Time) (int, error) {
	return timed(s.m, "prune_tokens", func() (int, error) { return s.Store.PruneTokens(ctx, before) })
}

func (s *timedStore) UpdateToken(ctx context.Context, id string, fn func(*store.Token) error) (store.Token, error) {
	return timed(s.m, "update_token", func() (store.Token, error) { return s.Store.UpdateToken(ctx, id, fn) })
}

func (s *timedStore) PutConnector(ctx context.Context, c store.Connector) error {
	return timedErr(s.m, "put_connector", func() error { return s.Store.PutConnector(ctx, c) })
}

func (s *timedStore) UpdateConnector(ctx context.Context, id string, fn func(*store.Connector) error) (store.Connector, error) {
	return timed(s.m, "update_connector", func() (store.Connector, error) { return s.Store.UpdateConnector(ctx, id, fn) })
}

func (s *timedStore) WatchConnectors(ctx context.Context, fn func(store.Connector)) (func(), error) {
	return timed(s.m, "watch_connectors", func() (func(), error) { return s.Store.WatchConnectors(ctx, fn) })
}

func (s *timedStore) GetConnector(ctx context.Context, id string) (store.Connector, error) {
	return timed(s.m, "get_connector", func() (store.Connector, error) { return s.Store.GetConnector(ctx, id) })
}

func (s *timedStore) ListConnectors(ctx context.Context) ([]store.Connector, error) {
	return timed(s.m, "list_connectors", func() ([]store.Connector, error) { return s.Store.ListConnectors(ctx) })
}

func (s *timedStore) CreateSession(ctx context.Context, se store.Session) error {
	return timedErr(s.m, "create_session", func() error { return s.Store.CreateSession(ctx, se) })
}

func (s *timedStore) GetSession(ctx context.Context, id string) (store.Session, error) {
	return timed(s.m, "get_session", func() (store.Session, error) { return s.Store.GetSession(ctx, id) })
}

func (s *timedStore) UpdateSession(ctx context.Context, id string, fn func(*store.Session) error) (store.Session, error) {
	return timed(s.m, "update_session", func() (store.Session, error) { return s.Store.UpdateSession(ctx, id, fn) })
}

func (s *timedStore) ListSessions(ctx context.Context) ([]store.Session, error) {
	return timed(s.m, "list_sessions", func() ([]store.Session, error) { return s.Store.ListSessions(ctx) })
}

func (s *timedStore) WatchSessions(ctx context.Context, fn func(store.Session)) (func(), error) {
	return timed(s.m, "watch_sessions", func() (func(), error) { return s.Store.WatchSessions(ctx, fn) })
}

func (s *timedStore) PruneSessions(ctx context.Context, before time.Time) (int, error) {
	return timed(s.m, "prune_sessions", func() (int, error) { return s.Store.PruneSessions(ctx, before) })
}

func (s *timedStore) PutPresence(ctx context.Context, p store.EdgePresence) error {
	return timedErr(s.m, "put_presence", func() error { return s.Store.PutPresence(ctx, p) })
}

func (s *timedStore) DeletePresence(ctx context.Context, id string) error {
	return timedErr(s.m, "delete_presence", func() error { return s.Store.DeletePresence(ctx, id) })
}

func (s *timedStore) WatchPresence(ctx context.Context, set func(store.EdgePresence), gone func(id string)) (func(), error) {
	return timed(s.m, "watch_presence", func() (func(), error) { return s.Store.WatchPresence(ctx, set, gone) })
}

func (s *timedStore) ConnectorsCaughtUp(ctx context.Context, prev uint64) (uint64, bool, error) {
	start := time.Now()
	last, caughtUp, err := s.Store.ConnectorsCaughtUp(ctx, prev)
	s.m.observe("connectors_caught_up", start, err)
	return last, caughtUp, err
}

func (s *timedStore) Audit(ctx context.Context, ev store.AuditEvent) error {
	return timedErr(s.m, "audit", func() error { return s.Store.Audit(ctx, ev) })
}

// ReadAudit is timed only when it does not follow: a follower lasts as
// long as its reader.
func (s *timedStore) ReadAudit(ctx context.Context, since time.Time, follow bool, fn func(store.AuditEvent) error) error {
	if follow {
		return s.Store.ReadAudit(ctx, since, follow, fn)
	}
	return timedErr(s.m, "read_audit", func() error { return s.Store.ReadAudit(ctx, since, follow, fn) })
}

// clusterCollector reports a store's cluster at each scrape, or nothing
// for a single node.
type clusterCollector struct {
	cluster                func() (StoreCluster, bool)
	servers, online, leads *prometheus.Desc
}

func newClusterCollector(cluster func() (StoreCluster, bool)) *clusterCollector {
	return &clusterCollector{
		cluster: cluster,
		servers: prometheus.NewDesc("sallyport_store_servers", "JetStream servers the store's cluster has had (cluster members and external stores only).", nil, nil),
		online:  prometheus.NewDesc("sallyport_store_servers_online", "JetStream servers of the store's cluster seen recently.", nil, nil),
		leads:   prometheus.NewDesc("sallyport_store_leader", "1 while the store's cluster has a JetStream meta leader (without one nothing can be written), else 0.", nil, nil),
	}
}

func (c *clusterCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.servers
	ch <- c.online
	ch <- c.leads
}

func (c *clusterCollector) Collect(ch chan<- prometheus.Metric) {
	st, ok := c.cluster()
	if !ok {
		return
	}
	ch <- prometheus.MustNewConstMetric(c.servers, prometheus.GaugeValue, float64(st.Servers))
	ch <- prometheus.MustNewConstMetric(c.online, prometheus.GaugeValue, float64(st.Online))
	ch <- prometheus.MustNewConstMetric(c.leads, prometheus.GaugeValue, boolFloat(st.Leader))
}
