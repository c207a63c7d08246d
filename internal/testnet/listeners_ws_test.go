package testnet_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/testnet"
)

// wsEdge starts an edge whose http listener (0) and https listener (1)
// answer WebSockets on edge.test and 127.0.0.1, with services echo (a TCP
// echo), web (an HTTP back-end on web.test), down (a connector whose
// back-end refuses), gone (no connector) and closed (denied to loopback).
func wsEdge(t *testing.T) (*listenerEdge, *certs) {
	t.Helper()
	cs := newCerts(t, "test web CA")
	files, _, _ := cs.issue(t, "edge", false, "edge.test")
	hosts := []string{"edge.test", "127.0.0.1"}
	e := startListenerEdge(t, []config.Listener{
		{Kind: config.KindHTTP, EdgeHosts: hosts, WSOrigins: []string{"127.0.0.1:*"}},
		{Kind: config.KindHTTPS, EdgeHosts: hosts, Certificates: []config.CertificateFiles{files}},
	}, map[string]config.EdgeService{
		"echo":   {},
		"web":    {Hosts: []string{"web.test"}},
		"down":   {},
		"gone":   {},
		"closed": {Policy: config.Policy{Deny: []string{"127.0.0.0/8"}}},
	})
	e.connect(t, map[string]string{"echo": testnet.Echo(t).Addr(), "web": httpBackend(t), "down": testnet.Refusing(t)}, nil)
	return e, cs
}

// wsRoundTrip sends data in binary messages on c and reads until as many
// bytes came back.
func wsRoundTrip(ctx context.Context, c *websocket.Conn, data []byte) ([]byte, error) {
	errc := make(chan error, 1)
	go func() {
		for rest := data; len(rest) > 0; {
			n := min(len(rest), 16<<10)
			if err := c.Write(ctx, websocket.MessageBinary, rest[:n]); err != nil {
				errc <- err
				return
			}
			rest = rest[n:]
		}
		errc <- nil
	}()
	var got []byte
	for len(got) < len(data) {
		typ, b, err := c.Read(ctx)
		if err != nil {
			return got, err
		}
		if typ != websocket.MessageBinary {
			return got, errors.New("a text message from the edge")
		}
		got = append(got, b...)
	}
	return got, <-errc
}

func TestWebSocketToTCPService(t *testing.T) {
	e, cs := wsEdge(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	dial := func(scheme string, i int, path string, opts *websocket.DialOptions) (*websocket.Conn, error) {
		if opts == nil {
			opts = &websocket.DialOptions{Host: "edge.test"}
		}
		c, resp, err := websocket.Dial(ctx, scheme+"://"+e.addr(i)+path, opts)
		if resp != nil && resp.Body != nil {
			resp.Body.Close()
		}
		return c, err
	}

	// ws:// and wss:// both carry bytes intact.
	tc := &tls.Config{RootCAs: cs.pool, ServerName: "edge.test"}
	tr := &http.Transport{TLSClientConfig: tc}
	defer tr.CloseIdleConnections()
	for _, v := range []struct {
		scheme string
		i      int
		opts   *websocket.DialOptions
	}{{"ws", 0, nil}, {"wss", 1, &websocket.DialOptions{HTTPClient: &http.Client{Transport: tr}}}} {
		c, err := dial(v.scheme, v.i, "/ws/echo", v.opts)
		if err != nil {
			t.Fatalf("%s: dial /ws/echo: %v", v.scheme, err)
		}
		data := randomBytes(1<<20, 9)
		got, err := wsRoundTrip(ctx, c, data)
		if err != nil || sha256.Sum256(got) != sha256.Sum256(data) {
			t.Fatalf("%s: %d bytes back of %d, err %v", v.scheme, len(got), len(data), err)
		}
		c.Close(websocket.StatusNormalClosure, "")
	}

	// Refusals: close codes with a reason.
	for _, tt := range []struct {
		path   string
		code   websocket.StatusCode
		reason string
	}{
		{"/ws/nope", websocket.StatusPolicyViolation, `no service named "nope"`},
		{"/ws/gone", websocket.StatusTryAgainLater, "no connector offers service gone right now; try again later"},
		{"/ws/closed", websocket.StatusPolicyViolation, "service closed does not let in clients from 127.0.0.1"},
		{"/ws/down", websocket.StatusBadGateway, `service "down": back-end unreachable`},
	} {
		c, err := dial("ws", 0, tt.path, nil)
		if err != nil {
			t.Fatalf("dial %s: %v", tt.path, err)
		}
		c.Write(ctx, websocket.MessageBinary, []byte("hello"))
		_, _, err = c.Read(ctx)
		var ce websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != tt.code || ce.Reason != tt.reason {
			t.Errorf("%s: closed with %v, want %d %q", tt.path, err, tt.code, tt.reason)
		}
		c.CloseNow()
	}

	// A text message is not part of a byte stream.
	c, err := dial("ws", 0, "/ws/echo", nil)
	if err != nil {
		t.Fatal(err)
	}
	c.Write(ctx, websocket.MessageText, []byte("text"))
	if _, _, err := c.Read(ctx); websocket.CloseStatus(err) != websocket.StatusUnsupportedData {
		t.Errorf("after a text message: %v, want close 1003", err)
	}
	c.CloseNow()

	// A page from a foreign origin is refused at the handshake.
	if c, err := dial("ws", 0, "/ws/echo", &websocket.DialOptions{Host: "edge.test", HTTPHeader: http.Header{"Origin": {"https://evil.test"}}}); err == nil {
		c.CloseNow()
		t.Error("a WebSocket from a foreign origin was accepted")
	}

	// /ws/ on a service's own host goes to its back-end, not to the edge;
	// other paths on the edge's host are a 404.
	hc := newHTTPClient(t, nil)
	if status, _, s := get(t, hc, "http://"+e.addr(0)+"/ws/echo", "web.test", nil); status != 200 || s.Path != "/ws/echo" {
		t.Errorf("web.test/ws/echo: %d %+v, want the back-end's answer", status, s)
	}
	if status, body, _ := get(t, hc, "http://"+e.addr(0)+"/other", "edge.test", nil); status != 404 || !strings.Contains(body, "/ws/<service>") {
		t.Errorf("edge.test/other: %d %q", status, body)
	}
	e.wantRefusals(t, map[string]int64{"unknown_service": 1, "no_connector": 1, "address_denied": 1, "connector": 1})
}

// TestListenersDrain stops an edge with a WebSocket stream and an idle
// keep-alive HTTP connection open: the idle connection is closed at once,
// the live stream runs until the drain timeout, then everything is closed
// and nothing is left running.
func TestListenersDrain(t *testing.T) {
	e, _ := wsEdge(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws://"+e.addr(0)+"/ws/echo", &websocket.DialOptions{Host: "edge.test"})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	if got, err := wsRoundTrip(ctx, ws, []byte("before")); err != nil || string(got) != "before" {
		t.Fatalf("before the stop: %q, %v", got, err)
	}
	idle, err := net.Dial("tcp", e.addr(0))
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	idle.Write([]byte("GET / HTTP/1.1\r\nHost: web.test\r\n\r\n"))
	br := bufio.NewReader(idle)
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("keep-alive request: %v", err)
	} else {
		resp.Body.Close()
	}

	stopped := make(chan error, 1)
	go func() { stopped <- e.Stop() }()
	e.Logs.WaitFor(t, 5*time.Second, 1, "edge stopping")
	idle.SetReadDeadline(time.Now().Add(time.Second)) // well before the 2s drain timeout
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("idle keep-alive connection during the drain: %v, want it closed (EOF)", err)
	}
	if got, err := wsRoundTrip(ctx, ws, []byte("during")); err != nil || string(got) != "during" {
		t.Errorf("the live WebSocket stopped working during the drain: %q, %v", got, err)
	}
	if err := <-stopped; err != nil {
		t.Fatalf("edge Run: %v", err)
	}
	if _, _, err := ws.Read(ctx); err == nil {
		t.Error("the WebSocket is still open after the edge stopped")
	}
	e.Logs.WaitFor(t, time.Second, 1, "drain timeout: closing client connections still open")
}

// wsPage is the page the browser test loads: it sends bytes to the echo
// service through the edge, then asks for a service that does not exist,
// and reports both outcomes in window.result.
const wsPage = `<!doctype html>
<title>sallyport ws test</title>
<script>
function run(url, payload) {
  return new Promise(resolve => {
    const ws = new WebSocket(url);
    ws.binaryType = "arraybuffer";
    const got = [];
    ws.onopen = () => ws.send(new Uint8Array(payload));
    ws.onmessage = e => {
      got.push(...new Uint8Array(e.data));
      if (got.length >= payload.length) {
        resolve({same: got.join(",") === payload.join(",")});
        ws.close();
      }
    };
    ws.onclose = e => resolve({code: e.code, reason: e.reason});
  });
}
const edge = new URLSearchParams(location.search).get("edge");
const payload = Array.from({length: 3000}, (_, i) => (i * 7) % 256);
(async () => {
  const echo = await run("ws://" + edge + "/ws/echo", payload);
  const nope = await run("ws://" + edge + "/ws/nope", [1]);
  window.result = JSON.stringify({echo, nope});
})();
</script>`

func TestWebSocketFromChromium(t *testing.T) {
	e, _ := wsEdge(t)
	page := servePage(t, wsPage)
	var result struct {
		Echo struct{ Same bool }
		Nope struct {
			Code   int
			Reason string
		}
	}
	runChromium(t, page+"?edge="+e.addr(0), &result)
	if !result.Echo.Same {
		t.Errorf("the page's bytes did not come back from the echo service: %+v", result)
	}
	if result.Nope.Code != 1008 || result.Nope.Reason != `no service named "nope"` {
		t.Errorf("the page saw /ws/nope close with %d %q, want 1008 and the reason", result.Nope.Code, result.Nope.Reason)
	}
}
