package tunnel

import (
	"bufio"
	"net"
	"sync"
)

// Transport is a tunnel's connection beneath TLS, made so that TLS
// records travel in few, large system calls. TLS reads and writes one
// record (at most 16 KiB) at a time; on its own it would make a system
// call for each. Here reads fill a large buffer from which TLS takes its
// records, and the records of one multiplexer message (up to 64 KiB, tap.go) are
// gathered and written with one call. Both ends wrap the raw connection before
// starting TLS:
//
//	tc := tls.Client(tunnel.NewTransport(raw), conf)
//
// A session whose TLS connection lies on a Transport uses it (see
// transportOf); any other connection works too, record by record.
type Transport struct {
	net.Conn
	r *bufio.Reader

	// mu guards corked and out.
	mu     sync.Mutex
	corked bool
	out    []byte
}

// transportReadSize is how much one read of the connection may take.
const transportReadSize = 128 << 10

// maxCorked is the largest gathering buffer kept between writes.
const maxCorked = 512 << 10

// NewTransport wraps c.
func NewTransport(c net.Conn) *Transport {
	return &Transport{Conn: c, r: bufio.NewReaderSize(c, transportReadSize)}
}

func (t *Transport) Read(b []byte) (int, error) { return t.r.Read(b) }

// Write writes b, or while corked gathers it to be written on uncork.
func (t *Transport) Write(b []byte) (int, error) {
	t.mu.Lock()
	if t.corked {
		t.out = append(t.out, b...)
		t.mu.Unlock()
		return len(b), nil
	}
	t.mu.Unlock()
	return t.Conn.Write(b)
}

// cork starts gathering writes.
func (t *Transport) cork() {
	t.mu.Lock()
	t.corked = true
	t.mu.Unlock()
}

// uncork writes what was gathered in one call and stops gathering.
func (t *Transport) uncork() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.corked = false
	if len(t.out) == 0 {
		return nil
	}
	_, err := t.Conn.Write(t.out)
	if cap(t.out) > maxCorked {
		t.out = nil
	} else {
		t.out = t.out[:0]
	}
	return err
}

// transportOf returns the Transport beneath conn's TLS, if any.
func transportOf(conn net.Conn) *Transport {
	nc, ok := conn.(interface{ NetConn() net.Conn })
	if !ok {
		return nil
	}
	t, _ := nc.NetConn().(*Transport)
	return t
}
