package mux

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sallyport/sallyport/internal/loopback"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// conns are the connections every scenario runs over: net.Pipe, TCP on
// loopback, and TLS 1.3 on loopback.
var conns = []struct {
	name string
	pair func(t testing.TB) (a, b net.Conn)
}{
	{"pipe", pipePair},
	{"tcp", tcpPair},
	{"tls", tlsPair},
}

func pipePair(t testing.TB) (net.Conn, net.Conn) {
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

func tcpPair(t testing.TB) (net.Conn, net.Conn) {
	a, b := loopback.Pair(t)
	return a, b
}

func tlsPair(t testing.TB) (net.Conn, net.Conn) {
	t.Helper()
	raw, sraw := loopback.Pair(t)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "mux test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, IsCA: true, BasicConstraintsValid: true,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	cc := tls.Client(raw, &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool, ServerName: "127.0.0.1"})
	sc := tls.Server(sraw, &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}})
	t.Cleanup(func() { cc.Close(); sc.Close() })
	errs := make(chan error, 1)
	go func() { errs <- sc.Handshake() }()
	if err := cc.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	return cc, sc
}

// sessions runs an opening session on a and an accepting one on b, both
// closed when the test ends.
func sessions(t testing.TB, a, b net.Conn, cfg Config) (opener, acceptor *Session) {
	t.Helper()
	ocfg := cfg
	ocfg.Opens = true
	opener, acceptor = New(a, ocfg), New(b, cfg)
	t.Cleanup(func() { opener.Close(); acceptor.Close() })
	return opener, acceptor
}

// open opens a stream on o and accepts it on a.
func open(t testing.TB, o, a *Session) (ost, ast *Stream) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ost, err := o.Open(ctx)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { ost.Close() })
	ast = accept(t, a)
	return ost, ast
}

// accept waits up to 5s for a stream on a.
func accept(t testing.TB, a *Session) *Stream {
	t.Helper()
	type result struct {
		st  *Stream
		err error
	}
	ch := make(chan result, 1)
	go func() { st, err := a.Accept(); ch <- result{st, err} }()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("Accept: %v", r.err)
		}
		t.Cleanup(func() { r.st.Close() })
		return r.st
	case <-time.After(5 * time.Second):
		t.Fatal("no stream to accept within 5s")
		return nil
	}
}

// stream writes n pseudo-random bytes of seed to w, in pieces of random
// sizes, and returns their hash.
func stream(w io.Writer, n int, seed uint64) ([32]byte, error) {
	r := mrand.New(mrand.NewPCG(seed, ^seed))
	src := mrand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	h := sha256.New()
	buf := make([]byte, 200<<10)
	for n > 0 {
		k := min(n, 1+r.IntN(len(buf)))
		src.Read(buf[:k])
		h.Write(buf[:k])
		if _, err := w.Write(buf[:k]); err != nil {
			return [32]byte{}, err
		}
		n -= k
	}
	return [32]byte(h.Sum(nil)), nil
}

// drain reads r to its end and returns the hash and count of its bytes.
func drain(r io.Reader) ([32]byte, int64, error) {
	h := sha256.New()
	n, err := io.CopyBuffer(h, r, make([]byte, 48<<10))
	return [32]byte(h.Sum(nil)), n, err
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

// eventually polls cond every 5ms for up to d.
func eventually(t testing.TB, d time.Duration, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// settled waits until to has handled every frame from has queued.
func settled(t testing.TB, from, to *Session) {
	t.Helper()
	n := from.FramesQueued()
	eventually(t, 5*time.Second, func() bool { return to.FramesHandled() >= n }, "the peer handles the frames queued for it")
}

// frame is a frame header, by hand.
func frame(typ uint8, flags uint16, id, length uint32) []byte {
	return appendHeader(nil, typ, flags, id, length)
}
