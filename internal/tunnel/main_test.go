package tunnel

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sallyport/sallyport/internal/loopback"
	"github.com/sallyport/sallyport/internal/wire"
	"github.com/sallyport/sallyport/internal/wstunnel"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// pairFunc returns the two ends of a fresh connection: the connector's
// and the edge's.
type pairFunc func(t testing.TB) (connector, edge net.Conn)

type transport struct {
	name string
	pair pairFunc
}

// transports are the connections every scenario that can runs over:
// TLS 1.3 on loopback TCP, and net.Pipe.
func transports() []transport { return []transport{{"tls", tlsPair}, {"pipe", memPair}} }

func memPair(t testing.TB) (net.Conn, net.Conn) {
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// tlsConfigs makes a self-signed certificate for 127.0.0.1 and the TLS 1.3
// configs of a server that presents it and a client that trusts only it.
func tlsConfigs(t testing.TB) (client, server *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "tunnel test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	server = &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}},
	}
	client = &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool, ServerName: "127.0.0.1"}
	return client, server
}

func tlsPair(t testing.TB) (net.Conn, net.Conn) { return tlsPairVia(t, nil) }

// tlsPairVia connects a TLS 1.3 client to a TLS server on loopback and
// completes the TLS handshake. If via is not nil, the client dials the
// address via returns for the server's address (a relay).
func tlsPairVia(t testing.TB, via func(target string) string) (net.Conn, net.Conn) {
	t.Helper()
	l := loopback.Listen(t)
	addr := l.Addr().String()
	if via != nil {
		addr = via(addr)
	}
	raw, sraw, err := loopback.DialAddr(l, addr)
	if err != nil {
		t.Fatal(err)
	}
	return tlsOver(t, raw, sraw)
}

// wsPair is tlsPair with a tunnel WebSocket (package wstunnel) beneath
// TLS: the client dials an HTTPS server on loopback whose handler
// accepts it.
func wsPair(t testing.TB) (net.Conn, net.Conn) {
	t.Helper()
	accepted := make(chan net.Conn, 1)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c, err := wstunnel.Accept(w, r); err == nil {
			accepted <- c
		}
	}))
	t.Cleanup(srv.Close)
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	raw, err := wstunnel.Dial(ctx, "wss://"+srv.Listener.Addr().String()+wstunnel.Path, (&net.Dialer{}).DialContext, pool)
	if err != nil {
		t.Fatal(err)
	}
	return tlsOver(t, raw, <-accepted)
}

// tlsOver runs TLS 1.3 over the two ends of a connection, a client on
// raw and a server on sraw, each on a Transport as edge and connector
// run it, and completes the TLS handshake.
func tlsOver(t testing.TB, raw, sraw net.Conn) (net.Conn, net.Conn) {
	t.Helper()
	return tlsOverTransports(t, NewTransport(raw), NewTransport(sraw))
}

// tlsOverTransports is tlsOver on Transports the caller made.
func tlsOverTransports(t testing.TB, raw, sraw *Transport) (net.Conn, net.Conn) {
	t.Helper()
	ccfg, scfg := tlsConfigs(t)
	cc, sc := tls.Client(raw, ccfg), tls.Server(sraw, scfg)
	t.Cleanup(func() { cc.Close(); sc.Close() })
	errs := make(chan error, 2)
	for _, c := range []*tls.Conn{cc, sc} {
		go func() {
			c.SetDeadline(time.Now().Add(10 * time.Second))
			err := c.Handshake()
			c.SetDeadline(time.Time{})
			errs <- err
		}()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatalf("TLS handshake: %v", err)
		}
	}
	if v := cc.ConnectionState().Version; v != tls.VersionTLS13 {
		t.Fatalf("TLS version %x, want 1.3", v)
	}
	return cc, sc
}

var testHello = wire.Hello{Instance: "c-42", Services: []string{"db", "ssh"}}
var testWelcome = wire.Welcome{EdgeID: "edge-a", Edges: []string{"127.0.0.1:5500", "[::1]:5500"}}

// handshake runs Client on the connector's end and ReadOpening + Server on
// the edge's, and returns both sessions (closed when the test ends) with
// what each side received.
func handshake(t testing.TB, connC, edgeC net.Conn, cfg Config) (connector, edge *Session, hello wire.Hello, welcome wire.Welcome) {
	t.Helper()
	type result struct {
		s   *Session
		w   wire.Welcome
		err error
	}
	ch := make(chan result, 1)
	go func() {
		s, w, err := Client(context.Background(), connC, testHello, cfg)
		ch <- result{s, w, err}
	}()
	edge, hello = admit(t, edgeC, cfg)
	r := <-ch
	if r.err != nil {
		edge.Close()
		t.Fatalf("Client: %v", r.err)
	}
	t.Cleanup(func() {
		r.s.Close()
		edge.Close()
	})
	return r.s, edge, hello, r.w
}

// admit runs the edge's side of the handshake on edgeC: ReadOpening,
// which must find a Hello, and Server.
func admit(t testing.TB, edgeC net.Conn, cfg Config) (*Session, wire.Hello) {
	t.Helper()
	var hello wire.Hello
	kind, body, err := ReadOpening(context.Background(), edgeC, cfg)
	if err != nil || kind != wire.KindHello {
		t.Fatalf("ReadOpening = %v, %v", kind, err)
	}
	if err := wire.Decode(kind, body, &hello); err != nil {
		t.Fatal(err)
	}
	edge, err := Server(edgeC, cfg, testWelcome)
	if err != nil {
		t.Fatalf("Server: %v", err)
	}
	return edge, hello
}

// sessions connects a connector and an edge session over pair.
func sessions(t testing.TB, pair pairFunc, cfg Config) (connector, edge *Session) {
	t.Helper()
	c, e := pair(t)
	connector, edge, _, _ = handshake(t, c, e, cfg)
	return connector, edge
}

func randomBytes(n int, seed uint64) []byte {
	r := mrand.New(mrand.NewPCG(seed, ^seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// within fails the test if done is not closed within d.
func within(t testing.TB, d time.Duration, done <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("%s: not within %s", what, d)
	}
}

// eventually polls cond every 10ms for up to d.
func eventually(t testing.TB, d time.Duration, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// settled waits until to has handled every frame that from has written
// so far: the multiplexer handles frames in the order they came.
func settled(t testing.TB, from, to *Session) {
	t.Helper()
	n := from.mux.FramesQueued()
	eventually(t, 5*time.Second, func() bool { return to.mux.FramesHandled() >= n },
		"the peer handles the frames written to it")
}
