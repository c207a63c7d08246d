//go:build linux

package netns

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/time/rate"
)

// floodDialers is how many of a flood's dials run at once: each holds an
// OS thread in the namespace while it dials.
const floodDialers = 16

// helloMaxAge bounds how long a flood holds a connection that sent its
// ClientHello: each closes it itself after a random time between half of
// this and this, and dials again at once, so that its connections never
// reach the edge's 10 s bound on a handshake together. An attacker keeps
// a flood fresh this way; without it, a flood opened at once lost nearly
// every connection at the same moment 10 s later, and a test that took
// longer than that on a loaded machine found the edge holding far fewer.
const helloMaxAge = 8 * time.Second

// Flood is a stranger's connections to one address, each idle or sending
// a TLS ClientHello and then nothing, kept open: one the far end closes
// is opened again, and one that sent a ClientHello is replaced by a fresh
// one before the edge's handshake bound (helloMaxAge). Its methods are
// safe for concurrent use.
type Flood struct {
	ns     *Namespace
	dst    string
	hello  []byte
	redial *rate.Limiter   // nil: no redials
	dial   chan struct{}   // a place among the floodDialers
	ctx    context.Context // ends at Stop
	stop   context.CancelFunc
	wg     sync.WaitGroup // the goroutines that hold the connections

	dials, failed atomic.Int64
	firstErr      atomic.Pointer[error]

	// mu guards conns, the connections open now, which Stop closes.
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

// StartFlood opens perSource connections to dst from each of sources
// (addresses of the namespace), and returns once every one is open or has
// failed. Each sends hello, if any, then reads whatever comes and sends
// nothing more; one that the far end closes is dialed again, from the same
// source, at most redials a second for the whole flood (none if redials
// is 0), until Stop, which the test's cleanup calls too.
func (n *Namespace) StartFlood(t testing.TB, dst string, sources []netip.Addr, perSource int, hello []byte, redials float64) *Flood {
	t.Helper()
	ctx, stop := context.WithCancel(context.Background())
	f := &Flood{ns: n, dst: dst, hello: hello, dial: make(chan struct{}, floodDialers), ctx: ctx, stop: stop,
		conns: map[net.Conn]struct{}{}}
	if redials > 0 {
		f.redial = rate.NewLimiter(rate.Limit(redials), 1)
	}
	t.Cleanup(f.Stop)
	var opened sync.WaitGroup
	for _, src := range sources {
		for range perSource {
			opened.Add(1)
			f.wg.Go(func() { f.hold(src, opened.Done) })
		}
	}
	opened.Wait()
	return f
}

// hold keeps one of the flood's connections open until Stop; it calls
// opened once its first dial is over.
func (f *Flood) hold(src netip.Addr, opened func()) {
	recycled := false
	for first := true; ; first = false {
		if !first && !recycled && (f.redial == nil || f.redial.Wait(f.ctx) != nil) {
			return
		}
		recycled = false
		c := f.open(src)
		if first {
			opened()
		}
		if c == nil {
			if f.ctx.Err() != nil {
				return
			}
			continue
		}
		if !f.track(c) {
			return
		}
		var ours atomic.Bool
		var aged *time.Timer
		if f.hello != nil {
			age := helloMaxAge/2 + rand.N(helloMaxAge/2)
			aged = time.AfterFunc(age, func() { ours.Store(true); c.Close() })
		}
		io.Copy(io.Discard, c) // until the far end, Stop or its age closes it
		if aged != nil {
			aged.Stop()
		}
		recycled = ours.Load()
		f.mu.Lock()
		delete(f.conns, c)
		f.mu.Unlock()
		c.Close()
		if f.ctx.Err() != nil {
			return
		}
	}
}

// track records c for Stop to close; once Stop has begun, it closes c
// and returns false.
func (f *Flood) track(c net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ctx.Err() != nil {
		c.Close()
		return false
	}
	f.conns[c] = struct{}{}
	return true
}

// open dials one connection from src and sends the hello; nil if that
// failed.
func (f *Flood) open(src netip.Addr) net.Conn {
	select {
	case f.dial <- struct{}{}:
	case <-f.ctx.Done():
		return nil
	}
	ctx, cancel := context.WithTimeout(f.ctx, 5*time.Second)
	c, err := f.ns.DialFrom(ctx, src, f.dst)
	cancel()
	<-f.dial
	f.dials.Add(1)
	if err == nil && f.hello != nil {
		c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if _, err = c.Write(f.hello); err != nil {
			c.Close()
		}
	}
	if err != nil {
		if f.ctx.Err() == nil {
			f.failed.Add(1)
			f.firstErr.CompareAndSwap(nil, &err)
		}
		return nil
	}
	return c
}

// Dials returns how many connections the flood has dialed, and how many
// of those failed (dial or hello), with the first failure.
func (f *Flood) Dials() (dials, failed int64, first error) {
	if p := f.firstErr.Load(); p != nil {
		first = *p
	}
	return f.dials.Load(), f.failed.Load(), first
}

// Stop closes every connection of the flood and waits until its
// goroutines have ended. It may be called more than once.
func (f *Flood) Stop() {
	f.stop()
	f.mu.Lock()
	for c := range f.conns {
		c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
}

// TLSClientHello returns the first TLS record of a Go client's handshake:
// a ClientHello, which a flood can send and then stall. It offers X25519
// alone, the cheapest key exchange for the server to answer: a flood here
// is to hold the edge's openings, not its processors (each ClientHello
// still costs the race-built edge about 1.5ms of CPU, a fifth less than
// with the default X25519MLKEM768).
func TLSClientHello() ([]byte, error) {
	client, server := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		tls.Client(client, &tls.Config{ServerName: "sallyport", InsecureSkipVerify: true, CurvePreferences: []tls.CurveID{tls.X25519}}).Handshake()
		client.Close()
	}()
	defer func() { server.Close(); <-done }()
	server.SetReadDeadline(time.Now().Add(10 * time.Second))
	header := make([]byte, 5)
	if _, err := io.ReadFull(server, header); err != nil {
		return nil, fmt.Errorf("read a ClientHello: %w", err)
	}
	record := make([]byte, 5+int(binary.BigEndian.Uint16(header[3:])))
	copy(record, header)
	if _, err := io.ReadFull(server, record[5:]); err != nil {
		return nil, fmt.Errorf("read a ClientHello: %w", err)
	}
	return record, nil
}
