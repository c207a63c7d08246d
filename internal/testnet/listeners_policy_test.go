package testnet_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/testnet"
	"golang.org/x/net/proxy"
)

// TestPolicy refuses clients by each policy key, on each kind of
// listener, and checks that each refusal reaches the client in its
// protocol's words and is counted.
func TestPolicy(t *testing.T) {
	echo := testnet.Echo(t)
	web := httpBackend(t)
	hour := time.Hour
	e := startListenerEdge(t, []config.Listener{
		{Kind: config.KindHTTP, EdgeHosts: []string{"edge.test"}},
		{Kind: config.KindSOCKS5},
	}, map[string]config.EdgeService{
		// tcp listeners
		"denied":     {Listen: "127.0.0.1:0", Policy: config.Policy{Deny: []string{"127.0.0.0/8"}}},
		"notallowed": {Listen: "127.0.0.1:0", Policy: config.Policy{Allow: []string{"10.0.0.0/8", "::1"}}},
		"allowed":    {Listen: "127.0.0.1:0", Policy: config.Policy{Allow: []string{"127.0.0.1"}}},
		"limited":    {Listen: "127.0.0.1:0", Policy: config.Policy{MaxConnections: 1}},
		"ratey":      {Listen: "127.0.0.1:0", Policy: config.Policy{Rate: config.Rate{Connections: 1, Per: hour, Burst: 2}}},
		// http, per request
		"web-denied":  {Hosts: []string{"denied.test"}, Policy: config.Policy{Deny: []string{"127.0.0.1"}}},
		"web-limited": {Hosts: []string{"limited.test"}, Policy: config.Policy{MaxConnections: 1}},
		"web-ratey":   {Hosts: []string{"ratey.test"}, Policy: config.Policy{Rate: config.Rate{Connections: 1, Per: hour}}},
	})
	backends := map[string]string{"web-denied": web, "web-limited": web, "web-ratey": web}
	for _, s := range []string{"denied", "notallowed", "allowed", "limited", "ratey"} {
		backends[s] = echo.Addr()
	}
	e.connect(t, backends, nil)

	// tcp: a refused client's connection is closed without a byte.
	refusedTCP := func(service string) bool {
		t.Helper()
		c := dialTCP(t, e.ServiceAddr(service).String())
		c.Write([]byte("ping"))
		b, err := closedWithin(c)
		return len(b) == 0 && err == nil
	}
	echoes := func(c *net.TCPConn) bool {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write([]byte("ping"))
		b := make([]byte, 4)
		_, err := c.Read(b)
		c.SetDeadline(time.Time{})
		return err == nil && string(b) == "ping"
	}
	for _, s := range []string{"denied", "notallowed"} {
		if !refusedTCP(s) {
			t.Errorf("tcp %s: a loopback client got through", s)
		}
	}
	if !echoes(dialTCP(t, e.ServiceAddr("allowed").String())) {
		t.Error("tcp allowed: the allowed client was refused")
	}
	first := dialTCP(t, e.ServiceAddr("limited").String())
	if !echoes(first) {
		t.Fatal("tcp limited: the first client was refused")
	}
	if !refusedTCP("limited") {
		t.Error("tcp limited: a second concurrent client got through max_connections 1")
	}
	first.Close()
	// The slot comes back once the first connection is over.
	e.Logs.WaitFor(t, 5*time.Second, 1, `msg="client connection closed" role=edge via=tcp service=limited`)
	if !echoes(dialTCP(t, e.ServiceAddr("limited").String())) {
		t.Error("tcp limited: the slot did not come back after the first client left")
	}
	for i := range 2 {
		if !echoes(dialTCP(t, e.ServiceAddr("ratey").String())) {
			t.Fatalf("tcp ratey: connection %d of the burst refused", i)
		}
	}
	if !refusedTCP("ratey") {
		t.Error("tcp ratey: a third connection got through a burst of 2")
	}

	// http: the status and the reason.
	hc := newHTTPClient(t, nil)
	url := "http://" + e.addr(0) + "/"
	if status, body, _ := get(t, hc, url, "denied.test", nil); status != 403 || body != "sallyport: service web-denied does not let in clients from 127.0.0.1\n" {
		t.Errorf("http denied: %d %q", status, body)
	}
	if status, _, _ := get(t, hc, url, "ratey.test", nil); status != 200 {
		t.Errorf("http ratey: first request %d", status)
	}
	if status, body, _ := get(t, hc, url, "ratey.test", nil); status != 429 || !strings.Contains(body, "too fast") {
		t.Errorf("http ratey: second request %d %q, want 429", status, body)
	}
	// max_connections counts requests in flight: hold one open with a
	// WebSocket upgrade to the back-end, then ask again.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, url+"ws-echo", &websocket.DialOptions{Host: "limited.test"})
	if err != nil {
		t.Fatalf("http limited: first request (an upgrade): %v", err)
	}
	if status, body, _ := get(t, hc, url, "limited.test", nil); status != 503 || !strings.Contains(body, "limit of 1 connections") {
		t.Errorf("http limited: second request %d %q, want 503", status, body)
	}
	ws.Close(websocket.StatusNormalClosure, "")

	// WebSocket access and SOCKS5 apply the same policy.
	wc, _, err := websocket.Dial(ctx, "ws://"+e.addr(0)+"/ws/denied", &websocket.DialOptions{Host: "edge.test"})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := wc.Read(ctx); websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
		t.Errorf("ws denied: %v, want close 1008", err)
	}
	wc.CloseNow()
	d, _ := proxy.SOCKS5("tcp", e.addr(1), nil, proxy.Direct)
	if c, err := d.Dial("tcp", "ratey:1"); err == nil || !strings.Contains(err.Error(), "not allowed by ruleset") {
		if c != nil {
			c.Close()
		}
		t.Errorf("socks5 ratey: %v, want refused by ruleset", err)
	}
	e.Logs.WaitFor(t, 5*time.Second, 1, "client refused: service ratey is taking new connections too fast")
	e.wantRefusals(t, map[string]int64{"address_denied": 4, "max_connections": 2, "rate_limited": 3})
}
