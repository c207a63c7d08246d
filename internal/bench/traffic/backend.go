package traffic

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// The back-ends run in a process of their own (ServeBackends), each on its
// own loopback listener; the direct runs and the connector dial the same
// ones.
//
//   - echo writes back what it reads (request/response, new connection
//     per request, idle connections);
//   - sink reads until end of stream, then writes the byte count as 8
//     bytes (Upload);
//   - source writes until the client goes away (Download);
//   - http answers small HTTP requests (wrk).
//
// iperf3's server, where installed, is the bulk back-end instead of sink
// and source.
type backend struct {
	ls   []net.Listener
	wg   sync.WaitGroup
	open atomic.Int64 // connections accepted and not yet closed

	// mu guards conns.
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

type serveFunc func(net.Conn)

func newBackend() *backend { return &backend{conns: map[net.Conn]struct{}{}} }

// listen serves fn on a new listener at addr and returns its address.
func (b *backend) listen(addr string, fn serveFunc) (string, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("start bench back-end on %s: %w", addr, err)
	}
	b.ls = append(b.ls, l)
	b.wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && !errors.Is(err, net.ErrClosed) {
					continue // out of descriptors: the client sees it
				}
				return
			}
			b.open.Add(1)
			b.mu.Lock()
			b.conns[c] = struct{}{}
			b.mu.Unlock()
			b.wg.Go(func() {
				fn(c)
				c.Close()
				b.mu.Lock()
				delete(b.conns, c)
				b.mu.Unlock()
				b.open.Add(-1)
			})
		}
	})
	return l.Addr().String(), nil
}

// close stops every listener and connection and waits for their goroutines.
func (b *backend) close() {
	for _, l := range b.ls {
		l.Close()
	}
	b.mu.Lock()
	for c := range b.conns {
		c.Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
}

// ServeBackends serves the benchmark's back-ends until ctx ends: each of
// specs is kind=addr, kind one of echo, sink, source and http. It writes
// "listening " and the bound kind=addr pairs, separated by spaces, as one
// line to out once all are listening. It is the benchmark's back-end
// process (sallyport bench --serve-backends), apart from the load
// generators and from what it measures.
func ServeBackends(ctx context.Context, specs []string, out io.Writer) error {
	b := newBackend()
	defer b.close()
	bound := make([]string, len(specs))
	for i, spec := range specs {
		kind, addr, ok := strings.Cut(spec, "=")
		fn, known := serveFuncs[kind]
		if !ok || !known {
			return fmt.Errorf("bench back-end %q: want kind=addr, kind one of echo, sink, source, http", spec)
		}
		a, err := b.listen(addr, fn)
		if err != nil {
			return err
		}
		bound[i] = kind + "=" + a
	}
	if _, err := fmt.Fprintf(out, "listening %s\n", strings.Join(bound, " ")); err != nil {
		return err
	}
	<-ctx.Done()
	return nil
}

// serveFuncs are the back-ends by kind.
var serveFuncs = map[string]serveFunc{"echo": echoSmall, "sink": sink, "source": source, "http": httpSmall}

// httpSmall answers HTTP/1.1 requests on c with a fixed 100-byte body
// (wrk's small requests), keeping the connection unless the client asks
// to close it. A real HTTP server (net/http) so that wrk meets ordinary
// HTTP behaviour, Connection: close included.
func httpSmall(c net.Conn) {
	srv := &http.Server{Handler: smallBody, ReadHeaderTimeout: IOTimeout, ErrorLog: log.New(io.Discard, "", 0)}
	srv.Serve(&oneConn{c: c})
}

var smallBody = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(MessageSize))
	w.Write(message())
})

// oneConn is a listener that yields one connection, then waits until that
// connection is closed: net/http serves a single accepted connection so.
type oneConn struct {
	c    net.Conn
	once sync.Once
	done chan struct{}
}

func (l *oneConn) Accept() (net.Conn, error) {
	var c net.Conn
	l.once.Do(func() {
		l.done = make(chan struct{})
		c = &closeNotify{Conn: l.c, done: l.done}
	})
	if c != nil {
		return c, nil
	}
	<-l.done
	return nil, net.ErrClosed
}
func (l *oneConn) Close() error   { return nil }
func (l *oneConn) Addr() net.Addr { return l.c.LocalAddr() }

// closeNotify closes done when the connection is closed.
type closeNotify struct {
	net.Conn
	once sync.Once
	done chan struct{}
}

func (c *closeNotify) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { close(c.done) })
	return err
}

// echoSmall echoes with a small buffer: its connections carry short
// messages, and thousands of them sit idle.
func echoSmall(c net.Conn) {
	var buf [512]byte
	for {
		n, err := c.Read(buf[:])
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// sink counts what it reads and, at end of stream, writes the count.
func sink(c net.Conn) {
	buf := make([]byte, 256<<10)
	var n int64
	for {
		m, err := c.Read(buf)
		n += int64(m)
		if err == io.EOF {
			break
		}
		if err != nil {
			return
		}
	}
	binary.Write(c, binary.BigEndian, n)
}

// source writes until the client goes away.
func source(c net.Conn) {
	buf := make([]byte, 256<<10)
	for i := range buf {
		buf[i] = byte(i)
	}
	for {
		if _, err := c.Write(buf); err != nil {
			return
		}
	}
}
