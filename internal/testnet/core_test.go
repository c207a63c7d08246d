package testnet_test

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/testnet"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// setup starts an edge exposing each service and a connector offering it
// from the given back-end, and waits until the edge routes them all.
func setup(t *testing.T, backends map[string]string) (*testnet.Edge, *testnet.Connector) {
	t.Helper()
	expose := map[string]string{}
	var grants []string
	for name := range backends {
		expose[name] = ""
		grants = append(grants, name)
	}
	e := testnet.StartEdge(t, testnet.EdgeOptions{Expose: expose})
	c := testnet.StartConnector(t, e.Keyfile(t, "site-a", time.Hour, grants...), testnet.ConnectorOptions{Services: backends})
	c.WaitTunnels(t, 1)
	for name := range backends {
		e.WaitRoutes(t, name, 1, 10*time.Second)
	}
	return e, c
}

// randomBytes returns n reproducible pseudo-random bytes.
func randomBytes(n int, seed uint64) []byte {
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	b := make([]byte, n)
	r.Read(b)
	return b
}

// roundTrip sends data through conn while reading what comes back, then
// half-closes and returns everything read until the peer's close.
func roundTrip(t *testing.T, conn *net.TCPConn, data []byte) []byte {
	t.Helper()
	conn.SetDeadline(time.Now().Add(2 * time.Minute))
	werr := make(chan error, 1)
	go func() {
		_, err := conn.Write(data)
		if err == nil {
			err = conn.CloseWrite()
		}
		werr <- err
	}()
	got, rerr := io.ReadAll(conn)
	if err := <-werr; err != nil {
		t.Fatalf("write: %v", err)
	}
	if rerr != nil {
		t.Fatalf("read: %v (after %d bytes)", rerr, len(got))
	}
	return got
}

func TestBytesArriveIntact(t *testing.T) {
	echo := testnet.Echo(t)
	e, _ := setup(t, map[string]string{"echo": echo.Addr()})
	for _, size := range []int{1, 64 << 10, 100 << 20} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			data := randomBytes(size, uint64(size))
			got := roundTrip(t, e.Dial(t, "echo"), data)
			if len(got) != len(data) {
				t.Fatalf("got %d bytes back, sent %d", len(got), len(data))
			}
			if sha256.Sum256(got) != sha256.Sum256(data) {
				t.Fatal("the bytes that came back differ from the bytes sent")
			}
		})
	}
}

func TestManyConcurrentClientsThroughOneTunnel(t *testing.T) {
	echo := testnet.Echo(t)
	e, c := setup(t, map[string]string{"echo": echo.Addr()})
	const clients = 200
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := range clients {
		wg.Go(func() {
			conn, err := net.DialTimeout("tcp", e.ServiceAddr("echo").String(), 10*time.Second)
			if err != nil {
				errs <- err
				return
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(time.Minute))
			data := randomBytes(4096+i, uint64(i))
			go func() {
				conn.Write(data)
				conn.(*net.TCPConn).CloseWrite()
			}()
			got, err := io.ReadAll(conn)
			if err != nil {
				errs <- fmt.Errorf("client %d: %w", i, err)
				return
			}
			if !bytes.Equal(got, data) {
				errs <- fmt.Errorf("client %d: got %d bytes, want %d, equal=%v", i, len(got), len(data), bytes.Equal(got, data))
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if c.Tunnels() != 1 {
		t.Errorf("connector has %d tunnels, want all clients through 1", c.Tunnels())
	}
	if got := echo.Accepted(); got != clients {
		t.Errorf("back-end accepted %d connections, want %d", got, clients)
	}
}

func TestHalfCloseKeepsTheResponse(t *testing.T) {
	reply := randomBytes(1<<20, 7)
	digest := testnet.Digest(t, reply)
	e, _ := setup(t, map[string]string{"digest": digest.Addr()})
	request := randomBytes(300<<10, 8)
	got := roundTrip(t, e.Dial(t, "digest"), request)
	want := sha256.Sum256(request)
	if len(got) != len(want)+len(reply) {
		t.Fatalf("got %d bytes after half-close, want %d (digest + reply)", len(got), len(want)+len(reply))
	}
	if !bytes.Equal(got[:len(want)], want[:]) {
		t.Fatal("the back-end saw other bytes than the client sent")
	}
	if !bytes.Equal(got[len(want):], reply) {
		t.Fatal("the response arrived damaged")
	}
}

func TestRefusingBackendClosesCleanlyAndOthersWork(t *testing.T) {
	echo := testnet.Echo(t)
	e, c := setup(t, map[string]string{"echo": echo.Addr(), "down": testnet.Refusing(t)})
	conn := e.Dial(t, "down")
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	conn.Write([]byte("hello?"))
	b, err := io.ReadAll(conn)
	if err != nil || len(b) != 0 {
		t.Fatalf("client of a refusing back-end: read %q, %v; want a clean close", b, err)
	}
	c.Logs.WaitFor(t, 5*time.Second, 1, "back-end unreachable")
	e.Logs.WaitFor(t, 5*time.Second, 1, "client refused by connector")
	if got := roundTrip(t, e.Dial(t, "echo"), []byte("still here")); string(got) != "still here" {
		t.Fatalf("echo after a refused stream: %q", got)
	}
}

func TestServiceWithoutConnectorClosesAtOnce(t *testing.T) {
	e := testnet.StartEdge(t, testnet.EdgeOptions{Expose: map[string]string{"nobody": ""}})
	for _, send := range []string{"", "a client that speaks first\n"} {
		conn := e.Dial(t, "nobody")
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		// Bytes the edge never reads must not turn the close into a reset.
		conn.Write([]byte(send))
		b, err := io.ReadAll(conn)
		if err != nil || len(b) != 0 {
			t.Fatalf("after sending %q: read %q, %v; want a clean close", send, b, err)
		}
	}
	e.Logs.WaitFor(t, 5*time.Second, 1, "no connector offers the service")
}

// A connection that rests longer than a copier lingers holds no goroutine
// on either side (it waits on readiness); after the rest it still carries
// bytes both ways, and a half-close still gets the whole response.
func TestRestingConnectionWakesUp(t *testing.T) {
	echo := testnet.Echo(t)
	reply := randomBytes(2<<20, 21)
	digest := testnet.Digest(t, reply)
	e, _ := setup(t, map[string]string{"echo": echo.Addr(), "digest": digest.Addr()})

	const n = 20
	before := runtime.NumGoroutine()
	conns := make([]*net.TCPConn, n)
	for i := range conns {
		conns[i] = e.Dial(t, "echo")
		conns[i].SetDeadline(time.Now().Add(30 * time.Second))
		if _, err := conns[i].Write([]byte("hi")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(conns[i], make([]byte, 2)); err != nil {
			t.Fatal(err)
		}
	}
	d := e.Dial(t, "digest")
	d.SetDeadline(time.Now().Add(30 * time.Second))
	request := randomBytes(1<<20, 22)
	if _, err := d.Write(request[:1000]); err != nil {
		t.Fatal(err)
	}

	// At rest the back-ends keep a goroutine per connection; edge and
	// connector keep none (at most a few of their own, such as the
	// readiness poller). A goroutine per direction would be 4 more per
	// connection.
	most := (n + 1) + 5
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine()-before > most && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if got := runtime.NumGoroutine() - before; got > most {
		t.Errorf("%d resting connections hold %d more goroutines than before they opened, want at most %d (the back-ends' own)", n+1, got, most)
	}

	for i, c := range conns {
		msg := randomBytes(100<<10, uint64(100+i))
		go c.Write(msg)
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("connection %d after its rest: %v, bytes equal %v", i, err, bytes.Equal(got, msg))
		}
	}
	go func() {
		d.Write(request[1000:])
		d.CloseWrite()
	}()
	got, err := io.ReadAll(d)
	if err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(request)
	if len(got) != len(want)+len(reply) || !bytes.Equal(got[:len(want)], want[:]) || !bytes.Equal(got[len(want):], reply) {
		t.Fatalf("after a rest and a half-close: %d bytes back, digest right %v; want %d", len(got), len(got) >= len(want) && bytes.Equal(got[:len(want)], want[:]), len(want)+len(reply))
	}
}
