package testnet_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/sallyport/sallyport/internal/admin"
	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/edge"
	"github.com/sallyport/sallyport/internal/store"
	"github.com/sallyport/sallyport/internal/testnet"
	"golang.org/x/net/proxy"
)

// series is a scrape: each sample by its name and sorted labels, as in
// `name{a="x",b="y"}`; a histogram gives name_count and name_sum.
type series map[string]float64

// scrape GETs /metrics at addr with token ("" for none) and parses it,
// failing the test unless it answers 200 in the exposition format.
func scrape(t *testing.T, addr, token string) series {
	t.Helper()
	status, body := probe(t, addr, "/metrics", token)
	if status != http.StatusOK {
		t.Fatalf("GET /metrics at %s: %d %q", addr, status, body)
	}
	return parseMetrics(t, body)
}

func parseMetrics(t *testing.T, body string) series {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse the exposition: %v\n%s", err, body)
	}
	out := series{}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			slices.Sort(labels)
			key := func(n string) string { return n + "{" + strings.Join(labels, ",") + "}" }
			switch {
			case m.Counter != nil:
				out[key(name)] = m.Counter.GetValue()
			case m.Gauge != nil:
				out[key(name)] = m.Gauge.GetValue()
			case m.Histogram != nil:
				out[key(name+"_count")] = float64(m.Histogram.GetSampleCount())
				out[key(name+"_sum")] = m.Histogram.GetSampleSum()
			case m.Untyped != nil:
				out[key(name)] = m.Untyped.GetValue()
			}
		}
	}
	return out
}

// sallyport returns the keys of the series named sallyport_*.
func (s series) sallyport() []string {
	var keys []string
	for k := range s {
		if strings.HasPrefix(k, "sallyport_") {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}

// want fails the test unless s has key with value v.
func (s series) want(t *testing.T, key string, v float64) {
	t.Helper()
	got, ok := s[key]
	if !ok {
		t.Errorf("no series %s; sallyport series:\n%s", key, strings.Join(s.sallyport(), "\n"))
		return
	}
	if got != v {
		t.Errorf("%s = %v, want %v", key, got, v)
	}
}

// eventuallyMetric scrapes until key has value v, for at most timeout.
func eventuallyMetric(t *testing.T, timeout time.Duration, addr, token, key string, v float64) series {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		s := scrape(t, addr, token)
		if got, ok := s[key]; ok && got == v {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s is %v after %s, want %v; sallyport series:\n%s", key, s[key], timeout, v, strings.Join(s.sallyport(), "\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// metricsToken reads the metrics token from an edge's data directory,
// checking that only its owner can read it.
func metricsToken(t *testing.T, dataDir string) string {
	t.Helper()
	path := filepath.Join(dataDir, edge.MetricsTokenFile)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("the edge made no metrics token: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("%s has mode %v, want 0600", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// What a user checks on a dashboard, after real traffic through a real
// tunnel, scraped with the metrics token: the bytes each way exactly, the
// client let in and the ones refused under their reasons, the tunnel up
// and then down when the connector stops, the enrollment, store calls,
// and the Go runtime's own metrics.
func TestEdgeMetricsAfterTraffic(t *testing.T) {
	reply := []byte("and a reply of its own length")
	digest := testnet.Digest(t, reply)
	e := testnet.StartEdge(t, testnet.EdgeOptions{
		Expose: map[string]string{"db": "", "closed": "", "lonely": ""},
		Tune: func(c *config.Edge) {
			s := c.Services["closed"]
			s.Policy.Deny = []string{"127.0.0.0/8"}
			c.Services["closed"] = s
		},
	})
	c := testnet.StartConnector(t, e.Keyfile(t, "site-a", time.Hour, "db", "closed"), testnet.ConnectorOptions{
		Services: map[string]string{"db": digest.Addr(), "closed": digest.Addr()}})
	c.WaitTunnels(t, 1)
	e.WaitRoutes(t, "db", 1, 10*time.Second)
	token := metricsToken(t, e.Cfg.DataDir)
	addr := e.AdminAddr().String()

	data := randomBytes(300<<10, 14)
	got := roundTrip(t, e.Dial(t, "db"), data)
	sum := sha256.Sum256(data)
	if want := append(sum[:], reply...); string(got) != string(want) {
		t.Fatalf("reply through the tunnel: %d bytes, want %d", len(got), len(want))
	}
	for _, service := range []string{"closed", "lonely"} {
		if b, _ := io.ReadAll(e.Dial(t, service)); len(b) != 0 {
			t.Fatalf("a refused client of %s read %q", service, b)
		}
	}

	// The stream's close comes after its last byte: wait for it, then
	// every count is final.
	s := eventuallyMetric(t, 10*time.Second, addr, token, `sallyport_edge_stream_duration_seconds_count{service="db"}`, 1)
	s.want(t, `sallyport_edge_relayed_bytes_total{direction="to_backend",service="db"}`, float64(len(data)))
	s.want(t, `sallyport_edge_relayed_bytes_total{direction="to_client",service="db"}`, float64(len(got)))
	s.want(t, `sallyport_edge_clients_admitted_total{listener="tcp",service="db"}`, 1)
	s.want(t, `sallyport_edge_streams_opened_total{service="db"}`, 1)
	s.want(t, `sallyport_edge_stream_first_byte_seconds_count{service="db"}`, 1)
	s.want(t, `sallyport_edge_clients_refused_total{listener="tcp",reason="address_denied",service="closed"}`, 1)
	s.want(t, `sallyport_edge_clients_refused_total{listener="tcp",reason="no_connector",service="lonely"}`, 1)
	s.want(t, `sallyport_edge_tunnels{connector="site-a"}`, 1)
	s.want(t, `sallyport_edge_enrollments_total{result="ok"}`, 1)
	s.want(t, `sallyport_edge_fenced{}`, 0)
	if s[`sallyport_store_operations_total{operation="consume_token",result="ok"}`] != 1 ||
		s[`sallyport_store_operation_duration_seconds_count{operation="consume_token"}`] != 1 {
		t.Errorf("the enrollment's token consumption is not counted and timed: %v, %v",
			s[`sallyport_store_operations_total{operation="consume_token",result="ok"}`], s[`sallyport_store_operation_duration_seconds_count{operation="consume_token"}`])
	}
	if s[`go_goroutines{}`] == 0 || s[`process_open_fds{}`] == 0 {
		t.Errorf("no Go runtime or process metrics: go_goroutines %v, process_open_fds %v", s[`go_goroutines{}`], s[`process_open_fds{}`])
	}

	c.Stop()
	eventuallyMetric(t, 10*time.Second, addr, token, `sallyport_edge_tunnels{connector="site-a"}`, 0)
}

// A used keyfile is refused, and counted under its reason.
func TestEdgeMetricsCountEnrollmentRefusals(t *testing.T) {
	e := testnet.StartEdge(t, testnet.EdgeOptions{Expose: map[string]string{"echo": ""}})
	kf := e.Keyfile(t, "site-a", time.Hour, "echo")
	c := testnet.StartConnector(t, kf, testnet.ConnectorOptions{Services: map[string]string{"echo": testnet.Echo(t).Addr()}})
	c.WaitTunnels(t, 1)
	again := testnet.StartConnector(t, kf, testnet.ConnectorOptions{Services: map[string]string{"echo": "127.0.0.1:1"}})
	if err := again.Done(t, 20*time.Second); err == nil {
		t.Fatal("a used keyfile enrolled a second connector")
	}
	token := metricsToken(t, e.Cfg.DataDir)
	s := scrape(t, e.AdminAddr().String(), token)
	s.want(t, `sallyport_edge_enrollments_total{result="ok"}`, 1)
	s.want(t, `sallyport_edge_enrollments_total{result="token_used"}`, 1)
}

// The attacker without the admin token: /metrics tells nothing without
// a token or with a wrong one (401, audited), and the metrics token opens
// /metrics and nothing else. The admin token and the socket read it too.
func TestEdgeMetricsNeedAToken(t *testing.T) {
	e := testnet.StartEdge(t, testnet.EdgeOptions{Expose: map[string]string{"secret-svc": ""}})
	addr := e.AdminAddr().String()
	token := metricsToken(t, e.Cfg.DataDir)
	adminToken, err := e.AdminToken()
	if err != nil {
		t.Fatal(err)
	}
	if token == adminToken || len(token) < 32 {
		t.Fatalf("metrics token %q: want a long one of its own", token)
	}
	for _, tok := range []string{"", "wrong", adminToken + "x", token[:len(token)-1]} {
		s, b := probe(t, addr, "/metrics", tok)
		if s != http.StatusUnauthorized || strings.Contains(b, "secret-svc") || strings.Contains(b, "sallyport_") {
			t.Fatalf("GET /metrics with token %q: %d %q, want 401 and nothing told", tok, s, b)
		}
	}
	// The metrics token is no admin token: every other path, any method.
	for _, r := range []struct{ method, path string }{
		{"GET", "/v1/status"}, {"GET", "/v1/connectors"}, {"GET", "/v1/tokens"}, {"GET", "/v1/audit"},
		{"POST", "/v1/tokens"}, {"POST", "/v1/sessions"}, {"POST", "/metrics"}, {"GET", "/metrics/"},
		{"GET", "/metrics/../v1/status"}, {"GET", "/v1/status?x=/metrics"},
	} {
		req, _ := http.NewRequestWithContext(t.Context(), r.method, "http://"+addr+r.path, strings.NewReader(`{"name":"x","service":"secret-svc"}`))
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode < 400 || strings.Contains(string(b), "secret-svc") {
			t.Errorf("%s %s with the metrics token: %d %q, want a refusal", r.method, r.path, resp.StatusCode, b)
		}
	}
	for _, tok := range []string{token, adminToken} {
		scrape(t, addr, tok).want(t, `sallyport_edge_relayed_bytes_total{direction="to_client",service="secret-svc"}`, 0)
	}
	// The socket's permissions are its authentication, as for the API.
	resp, err := socketGet(t, filepath.Join(e.Cfg.DataDir, admin.SocketFile), "/metrics")
	if err != nil || !strings.Contains(resp, "sallyport_edge_fenced 0") {
		t.Fatalf("GET /metrics over the socket: %v %q", err, resp)
	}

	// Refused scrapes are in the audit trail, as the API's refusals are;
	// the scrapes that got in are not.
	var refused, scrapes int
	err = e.AdminClient(t).Audit(t.Context(), time.Time{}, false, func(ev store.AuditEvent) error {
		s := fmt.Sprint(ev)
		switch {
		case strings.Contains(s, "/metrics") && strings.Contains(s, "401") && strings.Contains(s, "metrics scraper"):
			refused++
		case strings.Contains(s, "GET /metrics") && !strings.Contains(s, "refused"):
			scrapes++
		}
		return nil
	})
	if err != nil || refused != 4 || scrapes != 0 {
		t.Fatalf("audit trail: %d refused scrapes (want 4), %d scrapes let in (want 0), %v", refused, scrapes, err)
	}
}

// socketGet GETs path over the edge's admin socket and returns the body.
func socketGet(t *testing.T, socket, path string) (string, error) {
	t.Helper()
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return admin.DialSocket(ctx, socket)
	}}}
	resp, err := hc.Get("http://edge" + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return string(b), fmt.Errorf("status %d", resp.StatusCode)
	}
	return string(b), err
}

// The attacker who fills /metrics: 1,000 different unrouted TLS server
// names, HTTP Host headers, SOCKS service names and SOCKS addresses
// leave as many series as the first few did, and none of their strings
// is in the exposition.
func TestEdgeMetricsLabelsStayBounded(t *testing.T) {
	e := startListenerEdge(t, []config.Listener{{Kind: config.KindTLS}, {Kind: config.KindHTTP, EdgeHosts: []string{"edge.test"}}, {Kind: config.KindSOCKS5}},
		map[string]config.EdgeService{"web": {Hosts: []string{"web.test"}, SNI: []string{"web.test"}}})
	token := metricsToken(t, e.DataDir)
	addr := e.AdminAddr().String()
	socks, err := proxy.SOCKS5("tcp", e.addr(2), nil, &net.Dialer{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: 5 * time.Second}
	attack := func(i int) {
		name := fmt.Sprintf("evil-%d.attacker.test", i)
		tlsDialErr(e.addr(0), name)
		for _, r := range []struct{ host, path string }{
			{name, "/"}, // an unrouted Host
			{"edge.test", "/ws/svc-" + fmt.Sprint(i)}, // WebSocket access to no service
		} {
			req, _ := http.NewRequest(http.MethodGet, "http://"+e.addr(1)+r.path, nil)
			req.Host = r.host
			if resp, err := hc.Do(req); err == nil {
				resp.Body.Close()
			}
		}
		for _, dst := range []string{fmt.Sprintf("svc-%d:80", i), fmt.Sprintf("10.%d.%d.7:%d", i/250, i%250, 1000+i)} {
			if c, err := socks.Dial("tcp", dst); err == nil {
				c.Close()
				t.Errorf("SOCKS CONNECT %s got through", dst)
			}
		}
	}
	run := func(from, to int) {
		var wg sync.WaitGroup
		next := make(chan int)
		for range 8 {
			wg.Go(func() {
				for i := range next {
					attack(i)
				}
			})
		}
		for i := from; i < to; i++ {
			next <- i
		}
		close(next)
		wg.Wait()
	}
	run(0, 10)
	before := scrape(t, addr, token).sallyport()
	run(10, 1000)
	status, body := probe(t, addr, "/metrics", token)
	if status != http.StatusOK {
		t.Fatalf("GET /metrics: %d", status)
	}
	for i := 0; i < 1000; i += 37 {
		for _, sent := range []string{"attacker.test", "svc-", fmt.Sprintf("10.%d.%d.7", i/250, i%250)} {
			if strings.Contains(body, sent) {
				t.Fatalf("what a client sent (%s) is in /metrics", sent)
			}
		}
	}
	after := parseMetrics(t, body)
	if got := after.sallyport(); !slices.Equal(got, before) {
		t.Fatalf("1,000 attackers changed the sallyport series from %d to %d: new %v", len(before), len(got), newKeys(before, got))
	}
	// Counted all the same, under the fixed reasons.
	for r, n := range map[string]float64{
		`{listener="tls",reason="unrouted_sni",service=""}`:           1000,
		`{listener="http",reason="unknown_host",service=""}`:          1000,
		`{listener="http+ws",reason="unknown_service",service=""}`:    1000,
		`{listener="socks5",reason="address_not_allowed",service=""}`: 2000, // names that are no service are addresses
	} {
		if got := after["sallyport_edge_clients_refused_total"+r]; got != n {
			t.Errorf("refused %s: %v, want %v", r, got, n)
		}
	}
}

// newKeys returns the keys in b that are not in a.
func newKeys(a, b []string) []string {
	in := map[string]bool{}
	for _, k := range a {
		in[k] = true
	}
	var out []string
	for _, k := range b {
		if !in[k] {
			out = append(out, k)
		}
	}
	return out
}

// The connector's own metrics on metrics.listen, after real traffic:
// bytes each way exactly, the stream joined, a back-end that refuses
// counted as a failed dial and a refused stream, the enrollment, a
// renewal (certificates of 3 s renew after 2), and the tunnel to the
// edge up, then down when the edge stops.
func TestConnectorMetrics(t *testing.T) {
	reply := []byte("the back-end's own words")
	digest := testnet.Digest(t, reply)
	e := testnet.StartEdge(t, testnet.EdgeOptions{Expose: map[string]string{"db": "", "down": ""}, CertificateTTL: 3 * time.Second})
	conn := testnet.StartConnector(t, e.Keyfile(t, "site-a", time.Hour, "db", "down"), testnet.ConnectorOptions{
		Services: map[string]string{"db": digest.Addr(), "down": testnet.Refusing(t)},
		Tune:     func(c *config.Connector) { c.Metrics.Listen = "127.0.0.1:0" },
	})
	conn.WaitTunnels(t, 1)
	e.WaitRoutes(t, "db", 1, 10*time.Second)
	e.WaitRoutes(t, "down", 1, 10*time.Second)
	if conn.HealthAddr() != nil {
		t.Fatal("metrics.listen opened the health listener too")
	}
	addr := conn.MetricsAddr().String()
	edgeAddr := e.TunnelAddr().String()

	data := randomBytes(200<<10, 21)
	got := roundTrip(t, e.Dial(t, "db"), data)
	if len(got) != sha256.Size+len(reply) {
		t.Fatalf("reply through the tunnel: %d bytes", len(got))
	}
	if b, _ := io.ReadAll(e.Dial(t, "down")); len(b) != 0 {
		t.Fatalf("a client of a service whose back-end is down read %q", b)
	}
	// The connector counts a stream's bytes when it ends.
	s := eventuallyMetric(t, 10*time.Second, addr, "", `sallyport_connector_relayed_bytes_total{direction="to_backend",service="db"}`, float64(len(data)))
	s.want(t, `sallyport_connector_relayed_bytes_total{direction="to_client",service="db"}`, float64(len(got)))
	s.want(t, `sallyport_connector_streams_opened_total{service="db"}`, 1)
	s.want(t, `sallyport_connector_streams_refused_total{reason="back_end_unreachable",service="down"}`, 1)
	s.want(t, `sallyport_connector_backend_dial_failures_total{reason="refused",service="down"}`, 1)
	s.want(t, `sallyport_connector_enrollments_total{result="ok"}`, 1)
	s.want(t, `sallyport_connector_tunnels{edge="`+edgeAddr+`"}`, 1)
	s.want(t, `sallyport_connector_tunnel_dials_total{edge="`+edgeAddr+`",result="ok"}`, 1)
	if s[`go_goroutines{}`] == 0 {
		t.Error("no Go runtime metrics")
	}
	if st, _ := probe(t, addr, "/", ""); st != http.StatusNotFound {
		t.Errorf("GET / on the connector's metrics listener: %d, want 404", st)
	}
	eventuallyMetric(t, 10*time.Second, addr, "", `sallyport_connector_renewals_total{result="ok"}`, 1)
	// The edge counts it once its answer is written, maybe just after the
	// connector has read it.
	eventually(t, 5*time.Second, "the edge counts the renewal", func() bool {
		return scrape(t, e.AdminAddr().String(), metricsToken(t, e.Cfg.DataDir))[`sallyport_edge_renewals_total{result="ok"}`] >= 1
	})

	e.Stop()
	eventuallyMetric(t, 10*time.Second, addr, "", `sallyport_connector_tunnels{edge="`+edgeAddr+`"}`, 0)
	conn.Stop()
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatal("the stopped connector's metrics port still accepts")
	}
}

// On an http listener the policy admits each request, and the requests
// of one client connection share a pooled stream: three requests count
// three admissions and one stream, and their bodies among the bytes.
func TestEdgeMetricsHTTPRequests(t *testing.T) {
	e := startListenerEdge(t, []config.Listener{{Kind: config.KindHTTP}}, map[string]config.EdgeService{"web": {Hosts: []string{"web.test"}}})
	e.connect(t, map[string]string{"web": httpBackend(t)}, nil)
	client := newHTTPClient(t, nil)
	body := 0
	for i := range 3 {
		status, b, seen := get(t, client, "http://"+e.addr(0)+fmt.Sprintf("/r%d", i), "web.test", nil)
		if status != http.StatusOK || seen.Conn != 1 {
			t.Fatalf("request %d: %d %q", i, status, b)
		}
		body += len(b)
	}
	s := scrape(t, e.AdminAddr().String(), metricsToken(t, e.DataDir))
	s.want(t, `sallyport_edge_clients_admitted_total{listener="http",service="web"}`, 3)
	s.want(t, `sallyport_edge_streams_opened_total{service="web"}`, 1)
	if got := s[`sallyport_edge_relayed_bytes_total{direction="to_client",service="web"}`]; got < float64(body) {
		t.Errorf("bytes to clients: %v, less than the bodies' %d", got, body)
	}
	if s[`sallyport_edge_relayed_bytes_total{direction="to_backend",service="web"}`] == 0 {
		t.Error("no bytes counted towards the back-end")
	}
}
