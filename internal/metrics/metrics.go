// Package metrics defines sallyport's Prometheus metrics: one registry
// per role instance (an Edge or a Connector), never the process-wide
// default, so that tests can run many edges in one process and each
// scrape shows one instance.
//
//	m := metrics.NewEdge([]string{"db", "web"}) // the configured services
//	m.Admitted("db", "tcp")
//	http.Handle("/metrics", m.Handler())
//
// Every label value is bounded: service names from the config (any other
// name is counted as service=""), connector names from enrollments (which
// only the admin creates), refusal reasons from package admission's fixed
// set, listener kinds from the fixed set of listeners, results from fixed
// sets. No client address, token, host name or SNI a client sent is ever a
// label value.
//
// The relay's bytes are counted on the tunnel stream, one atomic add per
// read or write batch on a counter looked up once per service when the
// metrics are made (ServiceMetrics), never per byte and never under a lock.
package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Path is where a role serves its metrics.
const Path = "/metrics"

// Bucket sets, in seconds.
var (
	// durationBuckets are for connections: a request to a day-long shell.
	durationBuckets = []float64{0.01, 0.1, 0.5, 1, 5, 30, 60, 300, 1800, 3600, 14400, 86400}
	// latencyBuckets are for a first byte, a store call, a fence round, a
	// dial.
	latencyBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}
)

// newRegistry returns a registry with the Go runtime's and the process's
// collectors.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// handler serves reg in the exposition format; errors in collecting are
// answered with 500 (a broken collector should be seen, not hidden).
func handler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.HTTPErrorOnError})
}

// Result label values.
const (
	ResultOK    = "ok"
	ResultError = "error"
)

// result is ResultOK for a nil error, else ResultError.
func result(err error) string {
	if err != nil {
		return ResultError
	}
	return ResultOK
}
