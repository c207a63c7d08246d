package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
)

// The back-ends run in the benchmark's own process, each on its own
// loopback listener; the direct runs and the connector dial the same ones.
//
//   - echo writes back what it reads (request/response, new connection
//     per request, idle connections);
//   - sink reads until end of stream, then writes the byte count as 8
//     bytes (upload);
//   - source writes until the client goes away (download).
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

// ServeEcho serves an echo back-end on each of addrs until ctx ends. It
// writes "listening " and the bound addresses, separated by spaces, as
// one line to out once all are listening. It is the benchmark's idle
// back-end process (sallyport bench --echo-backend).
func ServeEcho(ctx context.Context, addrs []string, out io.Writer) error {
	b := newBackend()
	defer b.close()
	bound := make([]string, len(addrs))
	for i, a := range addrs {
		var err error
		if bound[i], err = b.listen(a, echoSmall); err != nil {
			return err
		}
	}
	if _, err := fmt.Fprintf(out, "listening %s\n", strings.Join(bound, " ")); err != nil {
		return err
	}
	<-ctx.Done()
	return nil
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
