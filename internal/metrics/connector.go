package metrics

import (
	"context"
	"errors"
	"net"
	"net/http"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
)

// Connector is one connector's metrics, in a registry of its own. Its
// methods are safe for concurrent use.
type Connector struct {
	reg *prometheus.Registry
	// services holds each configured service's counters, and ""'s for
	// any other name the edge asks for.
	services   byService[*connectorService]
	newService func(name string) *connectorService

	refused      *prometheus.CounterVec
	dialFailures *prometheus.CounterVec
	tunnels      *prometheus.GaugeVec
	tunnelDials  *prometheus.CounterVec
	enrollments  *prometheus.CounterVec
	renewals     *prometheus.CounterVec
}

// connectorService is one service's counters.
type connectorService struct {
	toBackend, toClient, opened prometheus.Counter
}

// NewConnector makes a connector's metrics for its configured services.
func NewConnector(services []string) *Connector {
	m := &Connector{reg: newRegistry()}
	f := factory{m.reg}
	bytes := f.counterVec("sallyport_connector_relayed_bytes_total",
		"Bytes relayed between the edge and back-ends, by service and direction (to_backend, to_client), counted when each stream ends.", "service", "direction")
	opened := f.counterVec("sallyport_connector_streams_opened_total",
		"Streams from an edge joined to their back-end, by service.", "service")
	m.refused = f.counterVec("sallyport_connector_streams_refused_total",
		"Streams from an edge refused, by service (empty for a name not configured) and reason (unknown_service, back_end_unreachable, draining).", "service", "reason")
	m.dialFailures = f.counterVec("sallyport_connector_backend_dial_failures_total",
		"Failed dials to back-ends, by service and reason (timeout, refused, unreachable, dns, proxy_header, other).", "service", "reason")
	m.tunnels = f.gaugeVec("sallyport_connector_tunnels",
		"Tunnels up to each edge, by its address.", "edge")
	m.tunnelDials = f.counterVec("sallyport_connector_tunnel_dials_total",
		"Dials of a tunnel to an edge (the first and every reconnect), by edge address and result (ok or error).", "edge", "result")
	m.enrollments = f.counterVec("sallyport_connector_enrollments_total",
		"Enrollment attempts, by result (ok, error for an edge out of reach, or the edge's refusal code).", "result")
	m.renewals = f.counterVec("sallyport_connector_renewals_total",
		"Certificate renewal attempts, by result (as enrollments).", "result")
	m.newService = func(s string) *connectorService {
		return &connectorService{
			toBackend: bytes.WithLabelValues(s, "to_backend"),
			toClient:  bytes.WithLabelValues(s, "to_client"),
			opened:    opened.WithLabelValues(s),
		}
	}
	m.Configure(services)
	return m
}

// Configure adds services that a reload configured to those the metrics
// name; a removed one keeps its series.
func (m *Connector) Configure(services []string) { m.services.configure(services, m.newService) }

// Handler serves the connector's metrics in Prometheus's exposition format.
func (m *Connector) Handler() http.Handler { return handler(m.reg) }

func (m *Connector) service(name string) *connectorService {
	return m.services.get(name)
}

// StreamOpened counts a stream joined to service's back-end.
func (m *Connector) StreamOpened(service string) { m.service(service).opened.Inc() }

// StreamRefused counts a stream refused with the refusal code named code.
func (m *Connector) StreamRefused(service, code string) {
	m.refused.WithLabelValues(m.services.label(service), codeLabel(code)).Inc()
}

// Relayed adds what a stream to service carried when it ended.
func (m *Connector) Relayed(service string, toBackend, toClient int64) {
	s := m.service(service)
	s.toBackend.Add(float64(toBackend))
	s.toClient.Add(float64(toClient))
}

// DialFailed counts a failed dial to service's back-end, by the kind of
// err; proxyHeader says the dial worked and the PROXY header's write
// failed.
func (m *Connector) DialFailed(service string, err error, proxyHeader bool) {
	reason := dialReason(err)
	if proxyHeader {
		reason = "proxy_header"
	}
	m.dialFailures.WithLabelValues(m.services.label(service), reason).Inc()
}

// dialReason sorts a dial error into a few fixed kinds.
func dialReason(err error) string {
	var dns *net.DNSError
	var ne net.Error
	switch {
	case errors.As(err, &dns):
		return "dns"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "unreachable"
	}
	return "other"
}

// TunnelDialed counts a dial of a tunnel to edge that ended with err.
func (m *Connector) TunnelDialed(edge string, err error) {
	m.tunnelDials.WithLabelValues(edge, result(err)).Inc()
}

// TunnelUp and TunnelDown count the live tunnels to edge.
func (m *Connector) TunnelUp(edge string)   { m.tunnels.WithLabelValues(edge).Inc() }
func (m *Connector) TunnelDown(edge string) { m.tunnels.WithLabelValues(edge).Dec() }

// Enrolled counts an enrollment attempt: "" for success, "error" for an
// edge out of reach, else the refusal code's name.
func (m *Connector) Enrolled(result string) { m.enrollments.WithLabelValues(codeLabel(result)).Inc() }

// Renewed counts a renewal attempt, as Enrolled.
func (m *Connector) Renewed(result string) { m.renewals.WithLabelValues(codeLabel(result)).Inc() }
