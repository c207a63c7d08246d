// Package wstunnel carries a connector's tunnel in a WebSocket on the
// edge's HTTPS port, for networks whose egress lets out HTTPS only. It
// turns the WebSocket into a net.Conn of binary messages; the tunnel's own
// mutual TLS then runs inside it, end to end, exactly as on the tunnel
// port, so whoever terminates the outer TLS (a TLS-inspecting proxy) sees
// WebSocket messages of TLS records and can impersonate neither side.
//
// The connector dials an address of the form wss://HOST[:PORT]/PATH:
//
//	raw, err := wstunnel.Dial(ctx, "wss://edge.example.com/.sallyport/tunnel", dial, roots)
//	tc := tls.Client(tunnel.NewTransport(raw), conf)
//
// The edge answers Path on its https listeners:
//
//	c, err := wstunnel.Accept(w, r) // then tls.Server(tunnel.NewTransport(c), conf)
package wstunnel

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// Path is where an edge's https listeners accept tunnels, on every host
// name: it is reserved, so no service's routing can shadow it.
const Path = "/.sallyport/tunnel"

// Scheme starts every WebSocket tunnel address.
const Scheme = "wss://"

// MaxMessage is the largest WebSocket message either side sends, and so
// the most the other side accepts in one (the read limit). A write larger
// than this goes as several messages. It is a quarter of the largest
// batch the multiplexer writes at once, so a batch takes few messages,
// and small enough that one message is written well within a keepalive
// timeout on a slow link (a write deadline that passes mid-message ends
// the WebSocket). The read limit does not bound memory (messages are
// read as a stream); it refuses a peer that breaks the framing we use.
const MaxMessage = 256 << 10

// IsAddress reports whether addr is a WebSocket tunnel address (wss://…)
// rather than a host:port of a tunnel port.
func IsAddress(addr string) bool { return strings.HasPrefix(strings.ToLower(addr), Scheme) }

// ParseAddress checks a WebSocket tunnel address, wss://HOST[:PORT]/PATH,
// and returns it parsed. The port defaults to 443 and the path to Path.
func ParseAddress(addr string) (*url.URL, error) {
	u, err := url.Parse(addr)
	if err != nil {
		return nil, fmt.Errorf("%q is not a URL: %w", addr, errors.Unwrap(err))
	}
	switch {
	case !strings.EqualFold(u.Scheme, "wss"):
		return nil, fmt.Errorf("%q: a WebSocket tunnel address starts with wss:// (ws:// without TLS is not offered)", addr)
	case u.Hostname() == "":
		return nil, fmt.Errorf("%q has no host", addr)
	case u.User != nil:
		return nil, fmt.Errorf("%q: credentials in the address are not used; remove them", addr)
	case u.RawQuery != "" || u.Fragment != "":
		return nil, fmt.Errorf("%q: a query or fragment is not allowed", addr)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.ParseUint(p, 10, 16); err != nil || n == 0 {
			return nil, fmt.Errorf("%q: the port must be a number from 1 to 65535", addr)
		}
	}
	if u.Path == "" {
		u.Path = Path
	}
	return u, nil
}

// HostPort returns the host:port that Dial's raw connection to addr (a
// WebSocket tunnel address) dials: the address's port, or 443.
func HostPort(addr string) (string, error) {
	u, err := ParseAddress(addr)
	if err != nil {
		return "", err
	}
	return dialHostPort(u), nil
}

func dialHostPort(u *url.URL) string {
	if u.Port() == "" {
		return net.JoinHostPort(u.Hostname(), "443")
	}
	return u.Host
}

// DialFunc dials the raw connection to the edge's HTTPS port (directly,
// or through a proxy).
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// Dial opens a tunnel WebSocket to addr (see ParseAddress): a raw
// connection by dial, TLS to the address's host verified against roots
// (the system's roots if nil), and the WebSocket upgrade, all within ctx.
// The caller owns the connection and closes it.
func Dial(ctx context.Context, addr string, dial DialFunc, roots *x509.CertPool) (net.Conn, error) {
	u, err := ParseAddress(addr)
	if err != nil {
		return nil, err
	}
	hostPort := dialHostPort(u)
	tr := &http.Transport{
		DialTLSContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			raw, err := dial(ctx, network, hostPort)
			if err != nil {
				return nil, err
			}
			// HTTP/1.1 only: a WebSocket over HTTP/2 (RFC 8441) is not
			// what the edge answers.
			tc := tls.Client(raw, &tls.Config{ServerName: u.Hostname(), RootCAs: roots, MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}})
			if err := tc.HandshakeContext(ctx); err != nil {
				raw.Close()
				return nil, fmt.Errorf("TLS with %s (the HTTPS port, before the tunnel's own TLS): %w", hostPort, err)
			}
			return tc, nil
		},
		Proxy:             nil, // the dial function decides about proxies
		DisableKeepAlives: true,
	}
	u.Scheme = "https" // the upgrade request; wss is the same
	wc, resp, err := websocket.Dial(ctx, u.String(), &websocket.DialOptions{HTTPClient: &http.Client{Transport: tr}})
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("WebSocket upgrade at %s refused: %s (is this an edge's https listener?)", addr, resp.Status)
		}
		return nil, fmt.Errorf("WebSocket upgrade at %s: %w", addr, err)
	}
	return newConn(wc), nil
}

// Accept upgrades r, a request for Path, to a tunnel WebSocket. It
// answers a request that is not a WebSocket upgrade with a short 400
// (Accept has then written the answer and returns an error). The
// connection lives on once the handler returns; the caller owns it.
func Accept(w http.ResponseWriter, r *http.Request) (net.Conn, error) {
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		http.Error(w, "Bad Request", http.StatusBadRequest)
		return nil, errors.New("not a WebSocket upgrade")
	}
	// A connector is no browser: it sends no Origin, and one that does
	// is refused rather than let a web page open tunnels.
	if r.Header.Get("Origin") != "" {
		http.Error(w, "Forbidden", http.StatusForbidden)
		return nil, fmt.Errorf("a browser's request (Origin %q)", r.Header.Get("Origin"))
	}
	wc, err := websocket.Accept(w, r, nil)
	if err != nil {
		return nil, err
	}
	return newConn(wc), nil
}

// conn is a tunnel WebSocket as a net.Conn: binary messages only (a text
// message ends it, with a close frame that says so), none larger than
// MaxMessage. Reads and writes may run at once, as on a TCP connection.
//
// A write deadline bounds each message rather than the whole write: its
// length starts again at each message, so a large write to a slow peer
// that keeps reading goes on, as a TCP write that makes progress does
// (tunnel.Transport relies on that), and a peer that takes nothing for
// that long fails it. (A deadline that passes mid-message ends the
// WebSocket: a message cannot be left half-sent.)
type conn struct {
	net.Conn // websocket.NetConn: reads message bodies as one stream
	wc       *websocket.Conn
	// writeTimeout is the length of the last write deadline set, in
	// nanoseconds; 0 for none.
	writeTimeout atomic.Int64
}

func newConn(wc *websocket.Conn) *conn {
	nc := websocket.NetConn(context.Background(), wc, websocket.MessageBinary)
	wc.SetReadLimit(MaxMessage) // after NetConn, which lifts the limit
	return &conn{Conn: nc, wc: wc}
}

// Write sends b in binary messages of at most MaxMessage bytes.
func (c *conn) Write(b []byte) (int, error) {
	var n int
	for i := 0; len(b) > 0; i++ {
		if d := time.Duration(c.writeTimeout.Load()); i > 0 && d > 0 {
			c.Conn.SetWriteDeadline(time.Now().Add(d))
		}
		m, err := c.Conn.Write(b[:min(len(b), MaxMessage)])
		n += m
		b = b[m:]
		if err != nil {
			return n, deadlineError(err)
		}
	}
	return n, nil
}

// Close ends the WebSocket at once, without waiting for the peer's close
// frame: the tunnel above has its own orderly end (TLS close_notify and
// the multiplexer's), and a gone peer must not hold a close for seconds.
func (c *conn) Close() error {
	c.SetDeadline(time.Time{}) // stops the deadline timers
	return c.wc.CloseNow()
}

// SetWriteDeadline sets the deadline of the next message, and the
// length of time each further message of a write gets.
func (c *conn) SetWriteDeadline(t time.Time) error {
	var d time.Duration
	if !t.IsZero() {
		d = max(time.Until(t), 1)
	}
	c.writeTimeout.Store(int64(d))
	return c.Conn.SetWriteDeadline(t)
}

// SetDeadline sets both deadlines (see SetWriteDeadline).
func (c *conn) SetDeadline(t time.Time) error {
	c.Conn.SetReadDeadline(t)
	return c.SetWriteDeadline(t)
}

func (c *conn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	return n, deadlineError(err)
}

// deadlineError makes a passed deadline (which the WebSocket reports as
// context.DeadlineExceeded, having closed itself) look as it does on a
// TCP connection, os.ErrDeadlineExceeded, for the callers that check.
func deadlineError(err error) error {
	if err != nil && errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("%w (%w)", os.ErrDeadlineExceeded, err)
	}
	return err
}
