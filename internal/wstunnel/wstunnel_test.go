package wstunnel_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/sallyport/sallyport/internal/wstunnel"
)

// serve starts an HTTPS server whose handler accepts tunnel WebSockets
// and hands each conn to use; it returns the server and a connected
// client WebSocket.
func serve(t *testing.T, use func(net.Conn)) *websocket.Conn {
	t.Helper()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := wstunnel.Accept(w, r)
		if err != nil {
			return
		}
		defer c.Close()
		use(c)
	}))
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	wc, _, err := websocket.Dial(ctx, srv.URL+wstunnel.Path, &websocket.DialOptions{HTTPClient: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { wc.CloseNow() })
	return wc
}

func closeStatus(t *testing.T, wc *websocket.Conn) (websocket.StatusCode, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for {
		_, _, err := wc.Read(ctx)
		if err == nil {
			continue
		}
		var ce websocket.CloseError
		if !errors.As(err, &ce) {
			t.Fatalf("read: %v; want a close frame", err)
		}
		return ce.Code, ce.Reason
	}
}

// A message larger than MaxMessage ends the WebSocket with a close that
// says so, before the reader sees more than the limit.
func TestReadLimit(t *testing.T) {
	got := make(chan int64, 1)
	wc := serve(t, func(c net.Conn) {
		n, _ := io.Copy(io.Discard, c)
		got <- n
	})
	go wc.Write(context.Background(), websocket.MessageBinary, make([]byte, 2*wstunnel.MaxMessage))
	if code, reason := closeStatus(t, wc); code != websocket.StatusMessageTooBig {
		t.Fatalf("close %v %q; want StatusMessageTooBig", code, reason)
	}
	if n := <-got; n > wstunnel.MaxMessage+1 {
		t.Fatalf("the reader got %d bytes of an oversized message", n)
	}
}

// A text message ends the WebSocket with a close that names the type.
func TestTextMessageRefused(t *testing.T) {
	wc := serve(t, func(c net.Conn) { io.Copy(io.Discard, c) })
	wc.Write(context.Background(), websocket.MessageText, []byte("hello"))
	code, reason := closeStatus(t, wc)
	if code != websocket.StatusUnsupportedData || !strings.Contains(reason, "expected MessageBinary") {
		t.Fatalf("close %v %q; want StatusUnsupportedData naming the binary type", code, reason)
	}
}

// A large write goes as binary messages of at most MaxMessage bytes, in
// order, so the peer's read limit never cuts a well-behaved side off.
func TestWriteSplitsIntoMessages(t *testing.T) {
	data := make([]byte, 3*wstunnel.MaxMessage+5)
	for i := range data {
		data[i] = byte(i * 7)
	}
	wc := serve(t, func(c net.Conn) { c.Write(data) })
	wc.SetReadLimit(wstunnel.MaxMessage)
	var got []byte
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for len(got) < len(data) {
		typ, m, err := wc.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if typ != websocket.MessageBinary || len(m) > wstunnel.MaxMessage {
			t.Fatalf("a %v message of %d bytes; want binary, at most %d", typ, len(m), wstunnel.MaxMessage)
		}
		got = append(got, m...)
	}
	if string(got) != string(data) {
		t.Fatal("the messages do not add up to what was written")
	}
}

func TestParseAddress(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{in: "wss://edge.example.com", want: "wss://edge.example.com" + wstunnel.Path},
		{in: "wss://edge.example.com:8443/x/tunnel", want: "wss://edge.example.com:8443/x/tunnel"},
		{in: "WSS://[2001:db8::1]/t", want: "wss://[2001:db8::1]/t"},
		{in: "ws://edge.example.com/t", err: "starts with wss://"},
		{in: "wss:///t", err: "has no host"},
		{in: "wss://u:p@edge.example.com/t", err: "credentials"},
		{in: "wss://edge.example.com/t?x=1", err: "query"},
		{in: "wss://edge.example.com:0/t", err: "port"},
		{in: "wss://edge.example.com:99999/t", err: "port"},
	} {
		u, err := wstunnel.ParseAddress(tc.in)
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("ParseAddress(%q) = %v, %v; want an error saying %q", tc.in, u, err, tc.err)
		case tc.err == "" && (err != nil || u.String() != tc.want):
			t.Errorf("ParseAddress(%q) = %v, %v; want %s", tc.in, u, err, tc.want)
		}
	}
}

// A browser's upgrade (it sends an Origin) is refused: a web page cannot
// open tunnels. A plain GET gets a bare 400.
func TestAcceptRefusesBrowsersAndPlainRequests(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c, err := wstunnel.Accept(w, r); err == nil {
			c.Close()
		}
	}))
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, resp, err := websocket.Dial(ctx, srv.URL+wstunnel.Path, &websocket.DialOptions{HTTPClient: srv.Client(),
		HTTPHeader: http.Header{"Origin": {"https://evil.example"}}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("upgrade with an Origin: %v, %v; want 403", resp, err)
	}
	r, err := srv.Client().Get(srv.URL + wstunnel.Path)
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusBadRequest {
		t.Errorf("plain GET: %d; want 400", r.StatusCode)
	}
}
