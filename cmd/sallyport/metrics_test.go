package main_test

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// get GETs url with the bearer token, if any, and returns the status and
// body.
func get(t *testing.T, url, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// As an operator sets it up: the edge makes metrics.token (0600) at its
// first start, and Prometheus reads the edge's /metrics with it; the
// connector, given --metrics-listen, has exactly one listening socket, on
// that loopback port, serving its own /metrics without a token.
func TestMetricsAsDeployed(t *testing.T) {
	connMetrics := freePort(t)
	s := startSite(t, nil, "--metrics-listen", connMetrics)
	roundTrip(t, dialClient(t, s.edge.services["echo"]), "counted")

	tokenFile := filepath.Join(s.edge.data, "metrics.token")
	if m := fileMode(t, tokenFile); m != 0o600 {
		t.Fatalf("metrics.token has mode %v, want 0600", m)
	}
	b, err := os.ReadFile(tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(string(b))
	if code, _ := get(t, "http://"+s.edge.admin+"/metrics", ""); code != http.StatusUnauthorized {
		t.Fatalf("edge /metrics without a token: %d, want 401", code)
	}
	code, body := get(t, "http://"+s.edge.admin+"/metrics", token)
	if code != http.StatusOK || !strings.Contains(body, `sallyport_edge_tunnels{connector="site-a"} 1`) {
		t.Fatalf("edge /metrics with metrics.token: %d\n%s", code, body)
	}

	code, body = get(t, "http://"+connMetrics+"/metrics", "")
	if code != http.StatusOK || !strings.Contains(body, `sallyport_connector_tunnels{edge="`+s.edge.tunnel+`"} 1`) {
		t.Fatalf("connector /metrics: %d\n%s", code, body)
	}
	listening := 0
	for _, k := range socketsOf(t, s.conn.Pid()) {
		if !k.listening() {
			continue
		}
		listening++
		if k.proto != "tcp" || k.localPort != portOf(t, connMetrics) || !strings.HasPrefix(k.localHex, "0100007F:") {
			t.Errorf("the connector listens on %s; want only 127.0.0.1:%d", k, portOf(t, connMetrics))
		}
	}
	if listening != 1 {
		t.Errorf("the connector has %d listening sockets, want 1 (metrics)", listening)
	}
}

// The connector's metrics stay on loopback unless the operator allows
// otherwise.
func TestConnectorMetricsListenLoopbackOnly(t *testing.T) {
	c, _, e := sallyport(t, "connector", "--data", t.TempDir(), "--service", "echo=127.0.0.1:7", "--metrics-listen", "0.0.0.0:0")
	if c != 1 || !strings.Contains(e, "metrics.listen") || !strings.Contains(e, "loopback") {
		t.Fatalf("connector --metrics-listen 0.0.0.0:0: exit %d, stderr %q", c, e)
	}
}
