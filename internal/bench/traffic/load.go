// Package traffic is the benchmark's own traffic: the back-ends it measures
// against (echo, sink, source, a small HTTP server; ServeBackends, run as a
// process of its own) and its Go load generators, used where iperf3 and wrk
// are not installed, and for the idle connections.
package traffic

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// IOTimeout bounds any one read or write of the load generators: a run
// that stalls fails instead of hanging.
const IOTimeout = 20 * time.Second

// Bulk is the result of a throughput run.
type Bulk struct {
	Bytes   int64
	Elapsed time.Duration
}

func (b Bulk) MBps() float64 { return float64(b.Bytes) / b.Elapsed.Seconds() / 1e6 }

// Upload writes to a sink at addr for dur, then half-closes and checks
// that the sink counted every byte.
func Upload(addr string, dur time.Duration) (int64, error) {
	c, n, err := stream(addr, "upload to", dur, func(c net.Conn, buf []byte) (int, error) {
		c.SetWriteDeadline(time.Now().Add(IOTimeout))
		return c.Write(buf)
	})
	if err != nil {
		return n, err
	}
	defer c.Close()
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return n, fmt.Errorf("upload to %s: half-close: %w", addr, err)
	}
	c.SetReadDeadline(time.Now().Add(IOTimeout))
	var got int64
	if err := binary.Read(c, binary.BigEndian, &got); err != nil {
		return n, fmt.Errorf("upload to %s: read the sink's count: %w", addr, err)
	}
	if got != n {
		return n, fmt.Errorf("upload to %s: sent %d bytes, the back-end received %d", addr, n, got)
	}
	return n, nil
}

// Download reads from a source at addr for dur.
func Download(addr string, dur time.Duration) (int64, error) {
	c, n, err := stream(addr, "download from", dur, func(c net.Conn, buf []byte) (int, error) {
		c.SetReadDeadline(time.Now().Add(IOTimeout))
		return c.Read(buf)
	})
	if err != nil {
		return n, err
	}
	c.Close()
	if n == 0 {
		return 0, fmt.Errorf("download from %s: no bytes", addr)
	}
	return n, nil
}

// stream dials addr and calls step with a 256 KiB buffer until dur has
// passed, counting what each call moved. It returns the connection, open,
// unless it fails; what names the direction in errors ("upload to").
func stream(addr, what string, dur time.Duration, step func(net.Conn, []byte) (int, error)) (net.Conn, int64, error) {
	c, err := net.DialTimeout("tcp", addr, IOTimeout)
	if err != nil {
		return nil, 0, fmt.Errorf("%s %s: dial: %w", what, addr, err)
	}
	buf := make([]byte, 256<<10)
	var n int64
	for end := time.Now().Add(dur); time.Now().Before(end); {
		m, err := step(c, buf)
		n += int64(m)
		if err != nil {
			c.Close()
			return nil, n, fmt.Errorf("%s %s after %d bytes: %w", what, addr, n, err)
		}
	}
	return c, n, nil
}

// Parallel runs fn on streams connections at once and sums their bytes.
func Parallel(streams int, fn func() (int64, error)) (Bulk, error) {
	var total atomic.Int64
	errs := make([]error, streams)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range streams {
		wg.Go(func() {
			n, err := fn()
			total.Add(n)
			errs[i] = err
		})
	}
	wg.Wait()
	b := Bulk{Bytes: total.Load(), Elapsed: time.Since(start)}
	for _, err := range errs {
		if err != nil {
			return b, err
		}
	}
	return b, nil
}

// MessageSize is the small request and response body.
const MessageSize = 100

func message() []byte {
	b := make([]byte, MessageSize)
	for i := range b {
		b[i] = 'a' + byte(i%26)
	}
	return b
}

// Requests is the result of a request/response run, by whichever tool.
type Requests struct {
	Count    int64
	Rate     float64 // requests a second
	P50, P99 time.Duration
}

// latencies is the result of a request/response run.
type latencies struct {
	count   int
	elapsed time.Duration
	sorted  []time.Duration
}

func (l latencies) rate() float64 { return float64(l.count) / l.elapsed.Seconds() }

// Requests summarizes l as the tools' runs are.
func (l latencies) Requests() Requests {
	if l.count == 0 {
		return Requests{}
	}
	return Requests{Count: int64(l.count), Rate: l.rate(), P50: l.pct(0.50), P99: l.pct(0.99)}
}

func (l latencies) pct(p float64) time.Duration {
	if len(l.sorted) == 0 {
		return 0
	}
	return l.sorted[min(len(l.sorted)-1, int(p*float64(len(l.sorted))))]
}

// collect runs worker on n goroutines for dur and merges what they measured.
func collect(n int, dur time.Duration, worker func(end time.Time) ([]time.Duration, error)) (latencies, error) {
	all := make([][]time.Duration, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := time.Now()
	end := start.Add(dur)
	for i := range n {
		wg.Go(func() { all[i], errs[i] = worker(end) })
	}
	wg.Wait()
	l := latencies{elapsed: time.Since(start)}
	for i := range n {
		if errs[i] != nil {
			return l, errs[i]
		}
		l.sorted = append(l.sorted, all[i]...)
	}
	slices.Sort(l.sorted)
	l.count = len(l.sorted)
	if l.count == 0 {
		return l, fmt.Errorf("no request completed")
	}
	return l, nil
}

// KeptAlive runs clients connections to an echo service at addr, each
// sending a 100-byte request and reading the 100-byte response in turn.
func KeptAlive(addr string, clients int, dur time.Duration) (latencies, error) {
	return collect(clients, dur, func(end time.Time) ([]time.Duration, error) {
		c, err := net.DialTimeout("tcp", addr, IOTimeout)
		if err != nil {
			return nil, fmt.Errorf("request/response: dial %s: %w", addr, err)
		}
		defer c.Close()
		req, resp := message(), make([]byte, MessageSize)
		var lat []time.Duration
		for {
			t0 := time.Now()
			if !t0.Before(end) {
				return lat, nil
			}
			c.SetDeadline(t0.Add(IOTimeout))
			if _, err := c.Write(req); err != nil {
				return lat, fmt.Errorf("request/response via %s: write: %w", addr, err)
			}
			if _, err := io.ReadFull(c, resp); err != nil {
				return lat, fmt.Errorf("request/response via %s: read: %w", addr, err)
			}
			lat = append(lat, time.Since(t0))
			if !bytes.Equal(req, resp) {
				return lat, fmt.Errorf("request/response via %s: response differs from request", addr)
			}
		}
	})
}

// NewConns runs workers that each connect to an echo service at addr,
// send 100 bytes, read them back and close, over and over. The latency
// is the time to first byte: from the start of the dial to the first
// byte of the response.
func NewConns(addr string, workers int, dur time.Duration) (latencies, error) {
	return collect(workers, dur, func(end time.Time) ([]time.Duration, error) {
		req, resp := message(), make([]byte, MessageSize)
		var lat []time.Duration
		for {
			t0 := time.Now()
			if !t0.Before(end) {
				return lat, nil
			}
			ttfb, err := oneRequest(addr, req, resp, t0)
			if err != nil {
				return lat, err
			}
			lat = append(lat, ttfb)
		}
	})
}

func oneRequest(addr string, req, resp []byte, t0 time.Time) (time.Duration, error) {
	c, err := net.DialTimeout("tcp", addr, IOTimeout)
	if err != nil {
		return 0, fmt.Errorf("new connection per request: dial %s: %w", addr, err)
	}
	defer c.Close()
	c.SetDeadline(t0.Add(IOTimeout))
	if _, err := c.Write(req); err != nil {
		return 0, fmt.Errorf("new connection per request via %s: write: %w", addr, err)
	}
	if _, err := io.ReadFull(c, resp[:1]); err != nil {
		return 0, fmt.Errorf("new connection per request via %s: read: %w", addr, err)
	}
	ttfb := time.Since(t0)
	if _, err := io.ReadFull(c, resp[1:]); err != nil {
		return 0, fmt.Errorf("new connection per request via %s: read: %w", addr, err)
	}
	if !bytes.Equal(req, resp) {
		return 0, fmt.Errorf("new connection per request via %s: response differs from request", addr)
	}
	return ttfb, nil
}

// PerSource is how many connections the idle run opens from one source
// address to one destination: below the ~28,000 ephemeral ports that
// one address pair has.
const PerSource = 20000

// OpenIdle opens n connections, the i-th to addrs[i/PerSource] from
// source address 127.0.0.(2+i/PerSource), and sends a byte on each and
// reads it back, so that every one is set up end to end (through the
// tunnel: a stream and a back-end connection) before it goes idle.
func OpenIdle(ctx context.Context, addrs []string, n int, timeout time.Duration) ([]net.Conn, error) {
	conns := make([]net.Conn, n)
	var next atomic.Int64
	var firstErr error
	var errOnce sync.Once
	var wg sync.WaitGroup
	deadline := time.Now().Add(timeout)
	for range 32 {
		wg.Go(func() {
			var b [1]byte
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				g := i / PerSource
				d := net.Dialer{Deadline: deadline, Control: bindNoPort,
					LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+g))}}
				c, err := d.Dial("tcp", addrs[g])
				if err == nil {
					conns[i] = c
					c.SetDeadline(deadline)
					if _, err = c.Write([]byte{'o'}); err == nil {
						_, err = io.ReadFull(c, b[:])
					}
					c.SetDeadline(time.Time{})
				}
				if err != nil {
					errOnce.Do(func() { firstErr = fmt.Errorf("open idle connection %d of %d to %s: %w", i+1, n, addrs[g], err) })
					next.Store(int64(n))
					return
				}
			}
		})
	}
	wg.Wait()
	if firstErr == nil && ctx.Err() != nil {
		firstErr = ctx.Err()
	}
	if firstErr != nil {
		CloseAll(conns)
		return nil, firstErr
	}
	return conns, nil
}

// CheckIdle sends one byte on every connection and reads it back; it
// returns how many carried it.
func CheckIdle(conns []net.Conn) int {
	var ok atomic.Int64
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			var b [1]byte
			for {
				i := int(next.Add(1) - 1)
				if i >= len(conns) {
					return
				}
				c := conns[i]
				c.SetDeadline(time.Now().Add(IOTimeout))
				if _, err := c.Write([]byte{'i'}); err != nil {
					continue
				}
				if _, err := io.ReadFull(c, b[:]); err == nil && b[0] == 'i' {
					ok.Add(1)
				}
			}
		})
	}
	wg.Wait()
	return int(ok.Load())
}

func CloseAll(conns []net.Conn) {
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
}
