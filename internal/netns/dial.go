//go:build linux

package netns

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/nsenter"
	"golang.org/x/sys/unix"
)

// Do runs fn on an OS thread that has joined the namespace, so that the
// sockets fn creates belong to it (a socket stays in the namespace it was
// created in, whichever thread uses it later). Do returns fn's error. The
// thread goes back to the test's own namespace before it is released; if
// it cannot, it stays locked and the Go runtime ends it with its goroutine.
func (n *Namespace) Do(fn func() error) error { return nsenter.Do(n.Name, fn) }

// Dial opens a TCP connection from the namespace, as a process on that
// host would.
func (n *Namespace) Dial(ctx context.Context, addr string) (net.Conn, error) {
	return n.DialFrom(ctx, netip.Addr{}, addr)
}

// DialFrom is Dial from the local address src, one of the namespace's
// addresses; the zero Addr lets the kernel choose, as Dial does.
func (n *Namespace) DialFrom(ctx context.Context, src netip.Addr, addr string) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func() error {
		var d net.Dialer
		if src.IsValid() {
			d.LocalAddr = &net.TCPAddr{IP: src.AsSlice()}
		}
		var err error
		c, err = d.DialContext(ctx, "tcp", addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("dial %s from %s: %w", addr, n.Role, err)
	}
	return c, nil
}

// DialTimeout is Dial with a timeout.
func (n *Namespace) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return n.Dial(ctx, addr)
}

// SYN flood source ports: below Linux's ephemeral range, so that the rule
// that hides the flood's RSTs never touches a real client's connection.
const (
	FloodPortMin = 1024
	FloodPortMax = 1999
)

// SendSYNs sends count TCP SYN segments from the namespace to dst, from
// source ports in [FloodPortMin, FloodPortMax], one every gap, through a
// raw socket: handshakes that are never completed. Run HideFloodResets
// first so that the namespace's kernel does not answer the SYN-ACKs with
// RSTs, which would let the target forget the half-open connections.
func (n *Namespace) SendSYNs(dst netip.AddrPort, count int, gap time.Duration) error {
	src, err := netip.ParseAddr(n.Addr)
	if err != nil {
		return err
	}
	return n.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
		if err != nil {
			return fmt.Errorf("open raw socket: %w", err)
		}
		defer unix.Close(fd)
		to := &unix.SockaddrInet4{Addr: dst.Addr().As4()}
		for i := range count {
			port := uint16(FloodPortMin + i%(FloodPortMax-FloodPortMin+1))
			seg := synSegment(src, dst, port)
			if err := unix.Sendto(fd, seg, 0, to); err != nil {
				return fmt.Errorf("send SYN %d of %d: %w", i+1, count, err)
			}
			time.Sleep(gap)
		}
		return nil
	})
}

// HideFloodResets adds an nftables table that drops the RSTs the namespace
// would send from the SYN flood's source ports; RemoveFloodResets removes it.
func (n *Namespace) HideFloodResets(t testing.TB) {
	t.Helper()
	script := fmt.Sprintf(`table inet sallyport_flood {
	chain output {
		type filter hook output priority filter; policy accept;
		tcp sport %d-%d tcp flags & rst == rst drop
	}
}
`, FloodPortMin, FloodPortMax)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := n.RunInput(ctx, []byte(script), "nft", "-f", "-"); err != nil {
		t.Fatalf("hide the SYN flood's resets: %v", err)
	}
}

// RemoveFloodResets undoes HideFloodResets.
func (n *Namespace) RemoveFloodResets() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := n.Run(ctx, "nft", "delete", "table", "inet", "sallyport_flood")
	return err
}

// synSegment builds a 20-byte TCP SYN from src:port to dst, with its
// checksum; the kernel adds the IP header.
func synSegment(src netip.Addr, dst netip.AddrPort, port uint16) []byte {
	seg := make([]byte, 20)
	binary.BigEndian.PutUint16(seg[0:], port)
	binary.BigEndian.PutUint16(seg[2:], dst.Port())
	var seq [4]byte
	rand.Read(seq[:])
	copy(seg[4:], seq[:])
	seg[12] = 5 << 4 // data offset: 5 words, no options
	seg[13] = 0x02   // SYN
	binary.BigEndian.PutUint16(seg[14:], 64240)
	s4, d4 := src.As4(), dst.Addr().As4()
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(b[i:]))
		}
	}
	add(s4[:])
	add(d4[:])
	sum += unix.IPPROTO_TCP + uint32(len(seg))
	add(seg)
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(seg[16:], ^uint16(sum))
	return seg
}
