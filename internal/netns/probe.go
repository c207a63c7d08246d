//go:build linux

package netns

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/enroll"
	"github.com/sallyport/sallyport/internal/pki"
	"github.com/sallyport/sallyport/internal/tunnel"
	"github.com/sallyport/sallyport/internal/wire"
)

// Probe is a hostile connector built from sallyport's own packages. It
// enrolls with a real keyfile, so the edge accepts its certificate, and
// then sends whatever bytes the test wants from outside. Its methods must
// be called from the test's goroutine.
type Probe struct {
	Cert tls.Certificate   // its connector certificate, issued by the edge
	CA   *x509.Certificate // the edge CA, pinned from the keyfile
	Pin  string
	s    *Stack
}

// EnrollProbe creates a keyfile in the DMZ and redeems it from outside, as
// a connector would, with the wire protocol of package wire.
func (s *Stack) EnrollProbe(t testing.TB, name string) *Probe {
	t.Helper()
	kf, err := enroll.DecodeKeyfile(bytes.NewReader(s.CreateKeyfile(t, name, "probe")))
	if err != nil {
		t.Fatal(err)
	}
	key, csr, err := pki.NewKeyAndCSR(name)
	if err != nil {
		t.Fatal(err)
	}
	tc := s.DialTunnelPort(t, pki.EnrollTLSConfig(kf.CAPin, nil))
	defer tc.Close()
	ca, err := pki.MatchPinnedCA(tc.ConnectionState().PeerCertificates, kf.CAPin)
	if err != nil {
		t.Fatal(err)
	}
	var resp wire.EnrollResponse
	err = tunnel.Handshake(context.Background(), tc, 10*time.Second, func() error {
		if err := wire.WriteMessage(tc, wire.KindEnrollRequest, wire.EnrollRequest{Token: kf.Token, CSR: csr}); err != nil {
			return err
		}
		return wire.ReadExpect(tc, wire.KindEnrollResponse, &resp)
	})
	if err != nil {
		t.Fatalf("enroll the probe: %v", err)
	}
	return &Probe{Cert: tls.Certificate{Certificate: [][]byte{resp.Certificate}, PrivateKey: key}, CA: ca, Pin: kf.CAPin, s: s}
}

// TLSConfig is the probe's client configuration: its certificate, the
// pinned edge CA.
func (p *Probe) TLSConfig() *tls.Config { return pki.ClientTLSConfig(p.CA, p.Pin, &p.Cert, nil) }

// Open dials the tunnel port from outside with the probe's certificate
// and exchanges preambles: the next bytes are the opening message.
func (p *Probe) Open(t testing.TB) *tls.Conn {
	t.Helper()
	tc := p.s.DialTunnelPort(t, p.TLSConfig())
	tc.SetDeadline(time.Now().Add(10 * time.Second))
	if err := tunnel.Preambles(tc); err != nil {
		t.Fatalf("probe: exchange preambles: %v", err)
	}
	tc.SetDeadline(time.Time{})
	return tc
}

// Hello opens a connection and completes the tunnel handshake as a
// connector offering services, by hand: after the Welcome, the next bytes
// are the multiplexer's, and nothing runs it.
func (p *Probe) Hello(t testing.TB, services ...string) *tls.Conn {
	t.Helper()
	tc := p.Open(t)
	tc.SetDeadline(time.Now().Add(10 * time.Second))
	if err := wire.WriteMessage(tc, wire.KindHello, wire.Hello{Instance: "probe", Services: services}); err != nil {
		t.Fatal(err)
	}
	var w wire.Welcome
	if err := wire.ReadExpect(tc, wire.KindWelcome, &w); err != nil {
		t.Fatalf("probe: tunnel handshake: %v", err)
	}
	tc.SetDeadline(time.Time{})
	return tc
}

// Session opens a connection and runs a real tunnel session on it, as
// a connector offering services.
func (p *Probe) Session(t testing.TB, services ...string) *tunnel.Session {
	t.Helper()
	tc := p.s.DialTunnelPort(t, p.TLSConfig())
	sess, _, err := tunnel.Client(context.Background(), tc, wire.Hello{Instance: "probe", Services: services},
		tunnel.Config{KeepaliveInterval: KeepaliveInterval, KeepaliveTimeout: KeepaliveTimeout})
	if err != nil {
		t.Fatalf("probe: tunnel session: %v", err)
	}
	t.Cleanup(func() { sess.Close() })
	return sess
}

// DialTunnelPort dials the edge's tunnel port from outside and completes
// a TLS handshake with cfg. The connection is closed when the test ends.
func (s *Stack) DialTunnelPort(t testing.TB, cfg *tls.Config) *tls.Conn {
	t.Helper()
	raw, err := s.Topo.Outside.DialTimeout(PublicAddr(TunnelPort), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	tc := tls.Client(raw, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		t.Fatalf("TLS with the edge's tunnel port: %v", err)
	}
	return tc
}

// Multiplexer frames (yamux v0 framing, as internal/mux speaks it): a 12-byte
// header of version, type, flags, stream id and length.
const (
	MuxTypeData         = 0
	MuxTypeWindowUpdate = 1
	MuxTypePing         = 2
	MuxFlagSYN          = 1
	MuxFlagACK          = 2
)

// MuxHeader encodes a multiplexer frame header.
func MuxHeader(version, typ byte, flags uint16, stream, length uint32) []byte {
	h := make([]byte, 12)
	h[0], h[1] = version, typ
	binary.BigEndian.PutUint16(h[2:], flags)
	binary.BigEndian.PutUint32(h[4:], stream)
	binary.BigEndian.PutUint32(h[8:], length)
	return h
}

// ReadUntilClosed reads c until the peer closes it or timeout passes and
// returns the bytes read and how the reading ended (nil for a clean end
// of stream).
func ReadUntilClosed(c net.Conn, timeout time.Duration) (int64, error) {
	c.SetReadDeadline(time.Now().Add(timeout))
	var n int64
	buf := make([]byte, 32<<10)
	for {
		m, err := c.Read(buf)
		n += int64(m)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return n, nil
			}
			return n, err
		}
	}
}
