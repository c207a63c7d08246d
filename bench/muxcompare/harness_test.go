// Package muxcompare measures the two candidate stream multiplexers for the
// sallyport tunnel, github.com/hashicorp/yamux and github.com/xtaci/smux
// (protocol version 2), over real loopback TCP with TLS 1.3, next to plain
// TCP and plain TLS baselines.
//
// The package holds tests and benchmarks only. The tests are quick and run
// with the rest of `go test ./...`; they pin the behaviour the tunnel relies
// on (no head-of-line blocking, half-close). The benchmarks are run by hand:
//
//	go test -run X -bench . -count 5 ./bench/muxcompare/
//
// and BenchmarkIdleStreamMemory is meant for -benchtime=1x.
package muxcompare

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
	"github.com/sallyport/sallyport/internal/loopback"
	"github.com/xtaci/smux"
)

// The tunnel configuration under test: the values internal/tunnel uses for
// yamux (Window, its default keepalive, acceptBacklog), and the matching
// values for smux.
const (
	// streamWindow is the most unread data one stream may have in flight
	// towards its peer (yamux MaxStreamWindowSize, smux MaxStreamBuffer).
	streamWindow = 1 << 20

	// smuxFrameSize is smux's MaxFrameSize (the protocol allows 65535,
	// which measured no faster).
	smuxFrameSize = 32 << 10

	// smuxSessionBuffer is smux's MaxReceiveBuffer: the unread data of all
	// streams of one session together. When it is used up the session stops
	// reading its connection, so it must exceed what stalled streams can
	// hold (see TestHeadOfLine).
	smuxSessionBuffer = 64 << 20

	// keepAliveInterval is how often an idle tunnel proves it is alive.
	keepAliveInterval = 5 * time.Second

	// keepAliveTimeout is how long a silent tunnel is kept before it is
	// closed (smux KeepAliveTimeout; yamux closes when a ping is not
	// answered within ConnectionWriteTimeout, set to the difference).
	keepAliveTimeout = 15 * time.Second

	// acceptBacklog is how many opened streams may wait for AcceptStream
	// (yamux; smux has a fixed backlog of 1024).
	acceptBacklog = 4096
)

// yamuxConfig returns the yamux configuration under test.
func yamuxConfig() *yamux.Config {
	c := yamux.DefaultConfig()
	c.AcceptBacklog = acceptBacklog
	c.EnableKeepAlive = true
	c.KeepAliveInterval = keepAliveInterval
	c.ConnectionWriteTimeout = keepAliveTimeout - keepAliveInterval
	c.MaxStreamWindowSize = streamWindow
	c.StreamOpenTimeout = keepAliveTimeout
	// No forced reset of half-closed streams: a long reply may follow a
	// client's half-close.
	c.StreamCloseTimeout = 0
	c.LogOutput = io.Discard
	return c
}

// smuxConfig returns the smux configuration under test: protocol version 2,
// whose per-stream window keeps one slow reader from stalling the session.
func smuxConfig() *smux.Config {
	c := smux.DefaultConfig()
	c.Version = 2
	c.KeepAliveDisabled = false
	c.KeepAliveInterval = keepAliveInterval
	c.KeepAliveTimeout = keepAliveTimeout
	c.MaxFrameSize = smuxFrameSize
	c.MaxStreamBuffer = streamWindow
	c.MaxReceiveBuffer = smuxSessionBuffer
	return c
}

// muxStream is one multiplexed stream as the tunnel sees it: a net.Conn
// with a half-close.
type muxStream interface {
	net.Conn
	// CloseWrite tells the peer that no more data follows (it reads EOF)
	// while this end can still read.
	CloseWrite() error
}

// muxSession is one end of a multiplexed session.
type muxSession interface {
	OpenStream() (muxStream, error)
	AcceptStream() (muxStream, error)
	// NumStreams is how many streams the session still tracks; a stream
	// leaves once both ends have closed it.
	NumStreams() int
	Close() error
}

// muxLib names a multiplexer and starts both ends of a session over an
// established connection pair.
type muxLib struct {
	name string
	// start runs the client end on c and the server end on s; each session
	// owns and closes its connection.
	start func(c, s net.Conn) (client, server muxSession, err error)
}

// muxLibs returns the two candidates, configured as proposed.
func muxLibs() []muxLib {
	return []muxLib{
		{name: "yamux", start: startYamux(yamuxConfig())},
		{name: "smux", start: startSmux(smuxConfig())},
	}
}

// benchLibs returns the candidates and the variants the benchmarks compare.
func benchLibs() []muxLib {
	return append(muxLibs(), muxLib{name: "yamux+coalesce", start: startYamuxCoalesced(yamuxConfig())})
}

// startYamuxCoalesced runs yamux over coalescingConn on both ends.
func startYamuxCoalesced(cfg *yamux.Config) func(c, s net.Conn) (muxSession, muxSession, error) {
	start := startYamux(cfg)
	return func(c, s net.Conn) (muxSession, muxSession, error) {
		return start(&coalescingConn{Conn: c}, &coalescingConn{Conn: s})
	}
}

// yamuxHeaderSize and yamuxTypeData are from the yamux v0 wire format.
const (
	yamuxHeaderSize = 12
	yamuxTypeData   = 0
)

// coalescingConn joins each yamux data-frame header with the body that
// yamux writes right after it, so that a frame costs one TLS record and
// one system call instead of two. Only a data frame with a non-zero length
// has a body; every other header is written through at once, so nothing is
// ever held back without a write that follows. yamux writes from one
// goroutine; so must any other user.
type coalescingConn struct {
	net.Conn
	held    bool
	header  [yamuxHeaderSize]byte
	scratch []byte
}

func (c *coalescingConn) Write(p []byte) (int, error) {
	if !c.held {
		if len(p) == yamuxHeaderSize && p[1] == yamuxTypeData && binary.BigEndian.Uint32(p[8:]) > 0 {
			copy(c.header[:], p)
			c.held = true
			return len(p), nil
		}
		return c.Conn.Write(p)
	}
	c.held = false
	c.scratch = append(append(c.scratch[:0], c.header[:]...), p...)
	n, err := c.Conn.Write(c.scratch)
	return max(n-yamuxHeaderSize, 0), err
}

func startYamux(cfg *yamux.Config) func(c, s net.Conn) (muxSession, muxSession, error) {
	return func(c, s net.Conn) (muxSession, muxSession, error) {
		cs, err := yamux.Client(c, cfg)
		if err != nil {
			return nil, nil, fmt.Errorf("start yamux client: %w", err)
		}
		ss, err := yamux.Server(s, cfg)
		if err != nil {
			cs.Close()
			return nil, nil, fmt.Errorf("start yamux server: %w", err)
		}
		return yamuxSession{s: cs}, yamuxSession{s: ss}, nil
	}
}

func startSmux(cfg *smux.Config) func(c, s net.Conn) (muxSession, muxSession, error) {
	return func(c, s net.Conn) (muxSession, muxSession, error) {
		cs, err := smux.Client(c, cfg)
		if err != nil {
			return nil, nil, fmt.Errorf("start smux client: %w", err)
		}
		ss, err := smux.Server(s, cfg)
		if err != nil {
			cs.Close()
			return nil, nil, fmt.Errorf("start smux server: %w", err)
		}
		return smuxSession{cs}, smuxSession{ss}, nil
	}
}

type yamuxSession struct{ s *yamux.Session }

func (y yamuxSession) OpenStream() (muxStream, error) {
	st, err := y.s.OpenStream()
	if err != nil {
		return nil, err
	}
	return yamuxStream{st}, nil
}

func (y yamuxSession) AcceptStream() (muxStream, error) {
	st, err := y.s.AcceptStream()
	if err != nil {
		return nil, err
	}
	return yamuxStream{st}, nil
}

func (y yamuxSession) NumStreams() int { return y.s.NumStreams() }

func (y yamuxSession) Close() error { return y.s.Close() }

// yamuxStream gives a yamux stream the CloseWrite the tunnel needs: yamux's
// Close sends FIN and keeps the read side open until the peer's FIN.
type yamuxStream struct{ *yamux.Stream }

func (y yamuxStream) CloseWrite() error { return y.Stream.Close() }

type smuxSession struct{ s *smux.Session }

func (m smuxSession) OpenStream() (muxStream, error) {
	st, err := m.s.OpenStream()
	if err != nil {
		return nil, err
	}
	return st, nil
}

func (m smuxSession) AcceptStream() (muxStream, error) {
	st, err := m.s.AcceptStream()
	if err != nil {
		return nil, err
	}
	return st, nil
}

func (m smuxSession) NumStreams() int { return m.s.NumStreams() }

func (m smuxSession) Close() error { return m.s.Close() }

// newTLSConfigs returns a TLS 1.3 server and client configuration sharing a
// fresh self-signed ECDSA P-256 certificate, with mutual authentication as
// the tunnel has it.
func newTLSConfigs(tb testing.TB) (server, client *tls.Config) {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatalf("generate ECDSA key: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "muxcompare"},
		DNSNames:              []string{"muxcompare"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatalf("create self-signed certificate: %v", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatalf("parse self-signed certificate: %v", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
	server = &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
	}
	client = &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
		ServerName:   "muxcompare",
	}
	return server, client
}

// handshakePair runs the TLS 1.3 handshake over a TCP pair and returns the
// TLS ends; they own the TCP ends.
func handshakePair(c, s net.Conn, serverCfg, clientCfg *tls.Config) (client, server *tls.Conn, err error) {
	client = tls.Client(c, clientCfg)
	server = tls.Server(s, serverCfg)
	errc := make(chan error, 1)
	go func() { errc <- server.Handshake() }()
	cerr := client.Handshake()
	serr := <-errc
	if cerr != nil || serr != nil {
		client.Close()
		server.Close()
		return nil, nil, fmt.Errorf("TLS handshake over loopback: %w", errors.Join(cerr, serr))
	}
	return client, server, nil
}

// tlsPair returns both ends of one loopback TLS 1.3 connection, closed by
// the test's cleanup.
func tlsPair(tb testing.TB) (client, server *tls.Conn) {
	tb.Helper()
	serverCfg, clientCfg := newTLSConfigs(tb)
	c, s := loopback.Pair(tb)
	client, server, err := handshakePair(c, s, serverCfg, clientCfg)
	if err != nil {
		tb.Fatal(err)
	}
	if st := client.ConnectionState(); st.Version != tls.VersionTLS13 {
		tb.Fatalf("TLS version %#x, want TLS 1.3", st.Version)
	}
	tb.Cleanup(func() {
		client.Close()
		server.Close()
	})
	return client, server
}

// sessionPair starts lib over a fresh loopback TLS 1.3 connection and
// returns both session ends, closed by the test's cleanup.
func sessionPair(tb testing.TB, lib muxLib) (client, server muxSession) {
	tb.Helper()
	c, s := tlsPair(tb)
	client, server, err := lib.start(c, s)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		client.Close()
		server.Close()
	})
	return client, server
}

// streamPair opens one stream on client, accepts it on server and moves one
// byte each way so that both ends are established.
func streamPair(client, server muxSession) (c, s muxStream, err error) {
	type accepted struct {
		s   muxStream
		err error
	}
	ch := make(chan accepted, 1)
	go func() {
		st, err := server.AcceptStream()
		if err == nil {
			err = echoByte(st)
		}
		ch <- accepted{st, err}
	}()
	c, err = client.OpenStream()
	if err == nil {
		err = pingByte(c)
	}
	a := <-ch
	if err != nil || a.err != nil {
		return nil, nil, fmt.Errorf("open stream pair: %w", errors.Join(err, a.err))
	}
	return c, a.s, nil
}

// pingByte writes one byte to c and reads one byte back.
func pingByte(c net.Conn) error {
	if _, err := c.Write([]byte{1}); err != nil {
		return fmt.Errorf("write ping: %w", err)
	}
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return fmt.Errorf("read pong: %w", err)
	}
	return nil
}

// echoByte reads one byte from c and writes it back.
func echoByte(c net.Conn) error {
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return fmt.Errorf("read ping: %w", err)
	}
	if _, err := c.Write(b[:]); err != nil {
		return fmt.Errorf("write pong: %w", err)
	}
	return nil
}

// readN reads exactly n bytes from r into a scratch buffer of buf's size and
// discards them.
func readN(r io.Reader, n int64, buf []byte) error {
	for n > 0 {
		chunk := buf
		if int64(len(chunk)) > n {
			chunk = chunk[:n]
		}
		k, err := r.Read(chunk)
		n -= int64(k)
		if err != nil {
			if n == 0 && errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("read with %d bytes to go: %w", n, err)
		}
	}
	return nil
}
