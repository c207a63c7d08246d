package metrics

import (
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Edge is one edge's metrics, in a registry of its own. Its methods are
// safe for concurrent use.
type Edge struct {
	reg *prometheus.Registry
	// services holds each configured service's relay metrics, and ""'s
	// for any other name.
	services   byService[*ServiceMetrics]
	newService func(name string) *ServiceMetrics

	admitted    *prometheus.CounterVec
	refused     *prometheus.CounterVec
	tunnels     *prometheus.GaugeVec
	enrollments *prometheus.CounterVec
	renewals    *prometheus.CounterVec
	fenceRounds *prometheus.HistogramVec
	store       *storeMetrics
}

// ServiceMetrics are one service's relay metrics, looked up once per
// stream (Edge.Service) so that the relay adds to them without a lookup.
type ServiceMetrics struct {
	// ToBackend and ToClient count the bytes relayed each way.
	ToBackend, ToClient prometheus.Counter
	// Opened counts the streams opened to the service's connectors.
	Opened prometheus.Counter
	// Duration observes how long each stream lasted; FirstByte, how long
	// after its opening the back-end's first byte came.
	Duration, FirstByte prometheus.Observer
}

// StoreCluster is what an edge's store knows of its cluster (see
// store.ClusterStatus).
type StoreCluster struct {
	Servers, Online int
	Leader          bool
}

// NewEdge makes an edge's metrics for its configured services. fenced
// tells whether the edge is fenced now, and cluster what its store knows
// of its cluster (ok false for a single node, which then has no such
// series); both are read at each scrape.
func NewEdge(services []string, fenced func() bool, cluster func() (_ StoreCluster, ok bool)) *Edge {
	m := &Edge{reg: newRegistry()}
	f := factory{m.reg}
	bytes := f.counterVec("sallyport_edge_relayed_bytes_total",
		"Bytes relayed between clients and back-ends, by service and direction (to_backend: from clients; to_client: from back-ends).", "service", "direction")
	opened := f.counterVec("sallyport_edge_streams_opened_total",
		"Streams opened through a tunnel to a connector, by service (an http(s) stream may carry several requests).", "service")
	duration := f.histogramVec("sallyport_edge_stream_duration_seconds",
		"How long streams to connectors lasted, from opening to close, by service (a tcp, tls, socks5 or WebSocket client connection is one stream).", durationBuckets, "service")
	firstByte := f.histogramVec("sallyport_edge_stream_first_byte_seconds",
		"Time from a stream's opening to the first byte from its back-end, by service (connector dial, back-end answer, and the client's own request).", latencyBuckets, "service")
	m.admitted = f.counterVec("sallyport_edge_clients_admitted_total",
		"Clients let in by their service's policy, by service and listener kind (http(s): requests).", "service", "listener")
	m.refused = f.counterVec("sallyport_edge_clients_refused_total",
		"Clients turned away, by service (empty when none was named or it is not configured), listener kind (empty when not known) and reason.", "service", "listener", "reason")
	m.tunnels = f.gaugeVec("sallyport_edge_tunnels",
		"Tunnels up from each enrolled connector, by its name.", "connector")
	m.enrollments = f.counterVec("sallyport_edge_enrollments_total",
		"Enrollment requests, by result (ok, or the refusal's code).", "result")
	m.renewals = f.counterVec("sallyport_edge_renewals_total",
		"Certificate renewal requests, by result (ok, or the refusal's code).", "result")
	m.fenceRounds = f.histogramVec("sallyport_edge_fence_round_duration_seconds",
		"How long each round of the freshness fence's store checks took, by result (fresh or stale).", latencyBuckets, "result")
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sallyport_edge_fenced",
		Help: "1 while the edge is fenced (cut off from its store: it serves nothing), else 0.",
	}, func() float64 { return boolFloat(fenced()) }))
	m.store = newStoreMetrics(f)
	m.reg.MustRegister(newClusterCollector(cluster))
	m.newService = func(s string) *ServiceMetrics {
		return &ServiceMetrics{
			ToBackend: bytes.WithLabelValues(s, "to_backend"),
			ToClient:  bytes.WithLabelValues(s, "to_client"),
			Opened:    opened.WithLabelValues(s),
			Duration:  duration.WithLabelValues(s),
			FirstByte: firstByte.WithLabelValues(s),
		}
	}
	m.Configure(services)
	return m
}

// Configure adds services that a reload configured to those the metrics
// name; a removed one keeps its series.
func (m *Edge) Configure(services []string) { m.services.configure(services, m.newService) }

// Handler serves the edge's metrics in Prometheus's exposition format.
func (m *Edge) Handler() http.Handler { return handler(m.reg) }

// Registry is the edge's registry, for tests and further collectors.
func (m *Edge) Registry() *prometheus.Registry { return m.reg }

// Service returns service's relay metrics; those of service "" for a name
// that is not configured.
func (m *Edge) Service(service string) *ServiceMetrics {
	return m.services.get(service)
}

// Admitted counts a client let in to service through a listener of kind
// listener (tcp, http, https, tls, socks5, and +ws after http(s) for
// WebSocket access).
func (m *Edge) Admitted(service, listener string) {
	m.admitted.WithLabelValues(m.services.label(service), listener).Inc()
}

// Refused counts a client turned away for reason.
func (m *Edge) Refused(service, listener, reason string) {
	m.refused.WithLabelValues(m.services.label(service), listener, reason).Inc()
}

// TunnelUp and TunnelDown count connector's live tunnels; connector is
// the name it was enrolled under.
func (m *Edge) TunnelUp(connector string)   { m.tunnels.WithLabelValues(connector).Inc() }
func (m *Edge) TunnelDown(connector string) { m.tunnels.WithLabelValues(connector).Dec() }

// Enrolled counts an enrollment request's result: "" for success, else
// the refusal code's name.
func (m *Edge) Enrolled(refusal string) { m.enrollments.WithLabelValues(codeLabel(refusal)).Inc() }

// Renewed counts a renewal request's result, as Enrolled.
func (m *Edge) Renewed(refusal string) { m.renewals.WithLabelValues(codeLabel(refusal)).Inc() }

// FenceRound observes one fence round that took d.
func (m *Edge) FenceRound(d time.Duration, fresh bool) {
	r := "stale"
	if fresh {
		r = "fresh"
	}
	m.fenceRounds.WithLabelValues(r).Observe(d.Seconds())
}

// codeLabel turns a refusal code's name ("token unknown") into a label
// value (token_unknown); "" is ok.
func codeLabel(s string) string {
	if s == "" {
		return ResultOK
	}
	return strings.NewReplacer(" ", "_", "-", "_").Replace(s)
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// factory makes metrics registered in reg.
type factory struct{ reg *prometheus.Registry }

func (f factory) counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	v := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	f.reg.MustRegister(v)
	return v
}

func (f factory) gaugeVec(name, help string, labels ...string) *prometheus.GaugeVec {
	v := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
	f.reg.MustRegister(v)
	return v
}

func (f factory) histogramVec(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
	v := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, labels)
	f.reg.MustRegister(v)
	return v
}
