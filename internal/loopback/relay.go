package loopback

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// Relay is a TCP relay between a connector and an edge that the test can
// freeze: a frozen relay keeps its connections open but forwards nothing,
// as a dead link or a vanished peer does (no FIN, no RST).
type Relay struct {
	l      net.Listener
	target string
	frozen atomic.Bool
	wg     sync.WaitGroup

	// mu guards conns.
	mu    sync.Mutex
	conns []net.Conn
}

// StartRelay relays connections on a new loopback port to target until
// t's cleanup closes it.
func StartRelay(t testing.TB, target string) *Relay {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &Relay{l: l, target: target}
	r.wg.Add(1)
	go r.accept()
	t.Cleanup(r.Close)
	return r
}

// Addr is the relay's address.
func (r *Relay) Addr() string { return r.l.Addr().String() }

// Freeze stops forwarding on every connection, open and future ones.
// Thaw lets new connections through again; frozen ones stay frozen.
func (r *Relay) Freeze() { r.frozen.Store(true) }

// Thaw lets new connections forward again.
func (r *Relay) Thaw() {
	r.mu.Lock()
	r.frozen.Store(false)
	r.mu.Unlock()
}

// Close stops the relay and closes its connections.
func (r *Relay) Close() {
	r.l.Close()
	r.mu.Lock()
	for _, c := range r.conns {
		c.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
}

func (r *Relay) accept() {
	defer r.wg.Done()
	for {
		c, err := r.l.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", r.target)
		if err != nil {
			c.Close()
			continue
		}
		frozen := &atomic.Bool{}
		r.mu.Lock()
		r.conns = append(r.conns, c, up)
		if r.frozen.Load() {
			frozen.Store(true)
		}
		r.mu.Unlock()
		r.wg.Add(2)
		go r.forward(up, c, frozen)
		go r.forward(c, up, frozen)
	}
}

// forward copies src to dst until either closes or the relay freezes;
// once frozen it reads and drops bytes, so the sender sees no error.
func (r *Relay) forward(dst, src net.Conn, frozen *atomic.Bool) {
	defer r.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if r.frozen.Load() {
			frozen.Store(true)
		}
		if n > 0 && !frozen.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if !errors.Is(err, net.ErrClosed) && !frozen.Load() {
				if tc, ok := dst.(*net.TCPConn); ok {
					tc.CloseWrite()
				}
			}
			return
		}
	}
}
