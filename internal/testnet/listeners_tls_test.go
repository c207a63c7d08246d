package testnet_test

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/config"
)

// tlsBackend starts an HTTPS back-end with its own certificate for names,
// from its own CA: a client that verifies it knows the edge did not
// terminate TLS.
func tlsBackend(t *testing.T, cs *certs, names ...string) string {
	t.Helper()
	_, _, pair := cs.issue(t, "backend-"+names[0], false, names...)
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pair}})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "TLS back-end: SNI %s, path %s", r.TLS.ServerName, r.URL.Path)
	})}
	var wg sync.WaitGroup
	wg.Go(func() { srv.Serve(l) })
	t.Cleanup(func() { srv.Close(); wg.Wait() })
	return l.Addr().String()
}

// tlsDialErr dials a tls listener as serverName and returns the handshake
// error ("" if none).
func tlsDialErr(addr, serverName string) string {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{ServerName: serverName, InsecureSkipVerify: true})
	if err != nil {
		return err.Error()
	}
	c.Close()
	return ""
}

func TestTLSPassthroughRoutesBySNI(t *testing.T) {
	cs := newCerts(t, "back-end CA")
	backend := tlsBackend(t, cs, "mqtt.test", "*.mqtt.test")
	e := startListenerEdge(t, []config.Listener{{Kind: config.KindTLS}}, map[string]config.EdgeService{
		"mqtt":   {SNI: []string{"mqtt.test", "*.mqtt.test"}},
		"gone":   {SNI: []string{"gone.test"}},
		"closed": {SNI: []string{"closed.test"}, Policy: config.Policy{Deny: []string{"127.0.0.0/8"}}},
	})
	e.connect(t, map[string]string{"mqtt": backend, "closed": backend}, nil)
	addr := e.addr(0)
	_, port, _ := net.SplitHostPort(addr)

	// The client verifies the back-end's own certificate end to end.
	c := newHTTPClient(t, &tls.Config{RootCAs: cs.pool, ServerName: "a.mqtt.test"})
	status, body, _ := get(t, c, "https://"+addr+"/x", "a.mqtt.test", nil)
	if status != 200 || body != "TLS back-end: SNI a.mqtt.test, path /x" {
		t.Errorf("through the tls listener: %d %q", status, body)
	}
	out, err := curl(t, "--cacert", cs.caFile, "--resolve", "mqtt.test:"+port+":127.0.0.1", "https://mqtt.test:"+port+"/curl")
	if err != nil || out != "TLS back-end: SNI mqtt.test, path /curl" {
		t.Errorf("curl through the tls listener: %v: %s", err, out)
	}

	// Refusals come as TLS alerts the client's TLS stack can name.
	for _, tt := range []struct{ name, want string }{
		{"nowhere.test", "unrecognized name"},
		{"127.0.0.1", "unrecognized name"}, // an IP address: no SNI at all
		{"gone.test", "internal error"},
		{"closed.test", "access denied"},
	} {
		if got := tlsDialErr(addr, tt.name); !strings.Contains(got, tt.want) {
			t.Errorf("TLS as %s: error %q, want it to contain %q", tt.name, got, tt.want)
		}
	}
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	raw.Write([]byte("GET / HTTP/1.1\r\nHost: mqtt.test\r\n\r\n"))
	if b, err := closedWithin(raw); len(b) != 0 || err != nil {
		t.Errorf("plain HTTP on the tls listener: got %q, %v; want a close", b, err)
	}
	raw.Close()
	e.Logs.WaitFor(t, 5*time.Second, 1, "client refused: not a TLS ClientHello")
	e.Logs.WaitFor(t, 5*time.Second, 1, `client refused: no service is published at TLS server name \"nowhere.test\"`)
	e.wantRefusals(t, map[string]int64{"unrouted_sni": 1, "no_sni": 1, "no_connector": 1, "address_denied": 1, "not_tls": 1})
}
