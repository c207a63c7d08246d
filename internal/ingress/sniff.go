package ingress

import (
	"errors"
	"net"
	"strconv"
	"sync"

	"github.com/sallyport/sallyport/internal/admission"
	"github.com/sallyport/sallyport/internal/pipe"
)

// verdict is what a sniffer makes of a connection's first bytes.
type verdict int

const (
	needMore verdict = iota
	accepted
	rejected
)

// sniffHTTP accepts bytes that start like an HTTP/1.x request line: a
// method token of 3 to 24 upper-case letters, '-' or '_', then a space.
// Anything else, a TLS ClientHello or an SSH banner say, is rejected.
func sniffHTTP(b []byte) verdict {
	const maxMethod = 24
	for i, ch := range b {
		switch {
		case ch == ' ' && i >= 3:
			return accepted
		case i >= maxMethod:
			return rejected
		case ch >= 'A' && ch <= 'Z', ch == '-', ch == '_':
		default:
			return rejected
		}
	}
	return needMore
}

// sniffTLS accepts bytes that start like a TLS handshake record.
func sniffTLS(b []byte) verdict {
	switch {
	case len(b) >= 1 && b[0] != recordTypeHandshake:
		return rejected
	case len(b) >= 2 && b[1] != 3:
		return rejected
	case len(b) >= 2:
		return accepted
	}
	return needMore
}

// errNotOurProtocol ends a connection whose first bytes a sniffer rejected.
var errNotOurProtocol = errors.New("first bytes are not of the listener's protocol; connection closed")

// sniffListener wraps a listener so that each connection's first bytes
// are checked before its server reads them, and each connection is
// tracked for the drain until it is closed.
type sniffListener struct {
	net.Listener
	s      *Set
	tr     *pipe.Tracker // the listener's client connections
	via    string
	sniff  func([]byte) verdict
	reason admission.Reason
	what   string // the protocol expected, for the log: "an HTTP request"
}

// Accept returns the next connection within the caps, wrapped; one over
// a cap is closed and counted here, and the next is taken. It does not
// read from the connection.
func (l *sniffListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.s.track(c, l.via, l.tr) {
			return &sniffConn{Conn: c, l: l}, nil
		}
	}
}

// sniffConn checks its first bytes on its first Read; a rejected
// connection is counted, logged, closed, and its Read fails. It is read
// from one goroutine at a time, as a server does.
type sniffConn struct {
	net.Conn
	l *sniffListener

	checked bool
	buf     []byte // bytes read while sniffing, not yet returned

	closeOnce sync.Once
}

func (c *sniffConn) Read(b []byte) (int, error) {
	if !c.checked {
		if err := c.check(); err != nil {
			return 0, err
		}
	}
	if len(c.buf) > 0 {
		n := copy(b, c.buf)
		c.buf = c.buf[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}

// check reads until the sniffer decides.
func (c *sniffConn) check() error {
	var tmp [32]byte
	for {
		n, err := c.Conn.Read(tmp[len(c.buf):])
		c.buf = append(c.buf, tmp[len(c.buf):len(c.buf)+n]...)
		switch c.l.sniff(c.buf) {
		case accepted:
			c.checked = true
			return nil
		case rejected:
			c.l.s.d.Refused(admission.Refuse(c.l.reason, "", "not %s; first bytes %s", c.l.what, strconv.Quote(string(c.buf))),
				client(c.Conn, c.l.via))
			c.Close()
			return &net.OpError{Op: "read", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: errNotOurProtocol}
		}
		if err != nil {
			return err
		}
		if len(c.buf) == len(tmp) {
			return errNotOurProtocol // unreachable: the sniffers decide sooner
		}
	}
}

// detach stops tracking the connection without closing it: it is no
// client's any more (a tunnel WebSocket, which the edge bounds itself).
func (c *sniffConn) detach() {
	c.closeOnce.Do(func() { c.l.s.untrack(c.Conn) })
}

// Close closes the connection and stops tracking it.
func (c *sniffConn) Close() error {
	err := c.Conn.Close()
	c.closeOnce.Do(func() { c.l.s.untrack(c.Conn) })
	return err
}
