//go:build linux

package wanlink

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fakeTUN is a datagram socket pair standing in for a TUN device: what
// the test writes to Peer, the delayer reads, as it would read what the
// kernel routes into the device, and what the delayer writes comes out
// of Peer, as the kernel would route it on.
type fakeTUN struct {
	Dev  *os.File // the delayer's end
	Peer *os.File // the test's end
}

func newFakeTUN(t *testing.T) fakeTUN {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		// Room for a burst of super-packets either way.
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 8<<20)
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 8<<20)
	}
	for _, fd := range fds {
		// Non-blocking: Go's poller serves it, and deadlines work.
		if err := unix.SetNonblock(fd, true); err != nil {
			t.Fatal(err)
		}
	}
	f := fakeTUN{Dev: os.NewFile(uintptr(fds[0]), "dev"), Peer: os.NewFile(uintptr(fds[1]), "peer")}
	t.Cleanup(func() { f.Peer.Close() })
	return f
}

// testPacket is a packet that is no super-packet (gso_type none), of n
// bytes, numbered seq.
func testPacket(seq, n int) []byte {
	p := make([]byte, n)
	binary.BigEndian.PutUint32(p[vnetHdrLen:], uint32(seq))
	for k := vnetHdrLen + 4; k < n; k++ {
		p[k] = byte(seq + k)
	}
	return p
}

// receive reads packets from the peer until it has want of them or none
// comes for quiet.
func receive(t *testing.T, peer *os.File, want int, quiet time.Duration) [][]byte {
	t.Helper()
	var got [][]byte
	buf := make([]byte, maxPacket)
	for len(got) < want {
		peer.SetReadDeadline(time.Now().Add(quiet))
		n, err := peer.Read(buf)
		if err != nil {
			break
		}
		got = append(got, bytes.Clone(buf[:n]))
	}
	return got
}

func TestDelayerDelaysInOrder(t *testing.T) {
	const delay, count = 30 * time.Millisecond, 300
	tun := newFakeTUN(t)
	d := newDelayer(tun.Dev, delay, 4<<20, 0)
	defer d.Close()
	sent := make([][]byte, count)
	for i := range sent {
		sent[i] = testPacket(i, vnetHdrLen+4+rand.IntN(9000))
	}
	// at[i] is when packet i was written (unix nanoseconds); the reader
	// learns of the write through the device, which the race detector
	// cannot see, hence atomics.
	at := make([]atomic.Int64, count)
	go func() {
		for i := range count {
			at[i].Store(time.Now().UnixNano())
			tun.Peer.Write(sent[i])
			if i%50 == 0 {
				// Bursts of 50, not one of 300: packets leave over
				// time, as on a link (a pace, not an ordering).
				time.Sleep(5 * time.Millisecond)
			}
		}
	}()
	buf := make([]byte, maxPacket)
	for i := range count {
		tun.Peer.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := tun.Peer.Read(buf)
		if err != nil {
			t.Fatalf("packet %d of %d: %v", i, count, err)
		}
		if held := time.Since(time.Unix(0, at[i].Load())); held < delay {
			t.Fatalf("packet %d came back after %s, before the delay of %s", i, held, delay)
		}
		if !bytes.Equal(buf[:n], sent[i]) {
			t.Fatalf("packet %d came back as packet %d, or changed", i, binary.BigEndian.Uint32(buf[vnetHdrLen:]))
		}
	}
	if s := d.stats(); s.Packets != count || s.Full != 0 || s.Lost != 0 || s.Errors != 0 {
		t.Errorf("stats %+v, want %d packets and nothing else", s, count)
	}
}

// A full buffer drops what does not fit, as a router's does, and what it
// holds comes back intact and in order.
func TestDelayerDropsWhenFull(t *testing.T) {
	const count, size = 200, 8000
	tun := newFakeTUN(t)
	d := newDelayer(tun.Dev, 300*time.Millisecond, 200_000, 0)
	defer d.Close()
	for i := range count {
		tun.Peer.Write(testPacket(i, size))
	}
	got := receive(t, tun.Peer, count, time.Second)
	if len(got) == 0 || len(got) == count {
		t.Fatalf("%d of %d packets of %d bytes through a buffer of 200,000 bytes", len(got), count, size)
	}
	last := -1
	for _, p := range got {
		seq := int(binary.BigEndian.Uint32(p[vnetHdrLen:]))
		if seq <= last || !bytes.Equal(p, testPacket(seq, size)) {
			t.Fatalf("packet %d after packet %d, or changed", seq, last)
		}
		last = seq
	}
	if s := d.stats(); s.Full != uint64(count-len(got)) || s.Packets != uint64(len(got)) {
		t.Errorf("stats %+v: want %d full and %d packets", s, count-len(got), len(got))
	}
}

func TestDelayerLoss(t *testing.T) {
	const count = 2000
	tun := newFakeTUN(t)
	d := newDelayer(tun.Dev, 0, 4<<20, LossResolution/5) // 20%
	defer d.Close()
	go func() {
		for i := range count {
			tun.Peer.Write(testPacket(i, 100))
		}
	}()
	got := receive(t, tun.Peer, count, time.Second)
	s := d.stats()
	if int(s.Lost)+len(got) != count {
		t.Fatalf("%d packets came back and %d were lost, of %d", len(got), s.Lost, count)
	}
	// 400 expected; the standard deviation is about 18.
	if s.Lost < 300 || s.Lost > 500 {
		t.Errorf("%d of %d packets lost, want about 20%%", s.Lost, count)
	}
}

// The loss drops segments of a super-packet, not whole super-packets, and
// the rest of the payload comes back, each byte once, at its sequence
// number.
func TestDelayerLossCutsSuperPackets(t *testing.T) {
	const count, segs, size = 50, 40, 100
	tun := newFakeTUN(t)
	d := newDelayer(tun.Dev, 0, 4<<20, LossResolution/4) // 25%
	defer d.Close()
	orig := testSuperPacket(segs, size, 0, tcpPSH)
	sp, _ := parseSuperPacket(orig)
	go func() {
		for range count {
			tun.Peer.Write(orig)
		}
	}()
	got := receive(t, tun.Peer, count*segs, time.Second)
	var segments uint64
	for _, p := range got {
		seq := binary.BigEndian.Uint32(p[vnetHdrLen+20+4:])
		from := int(seq - testSeq)
		if from%size != 0 || from >= segs*size {
			t.Fatalf("a piece starts at payload byte %d", from)
		}
		i := from / size
		n := (len(p) - vnetHdrLen - 40 + size - 1) / size
		checkPiece(t, sp, p, i, i+n)
		segments += uint64(n)
	}
	s := d.stats()
	if segments+s.Lost != count*segs {
		t.Fatalf("%d segments came back and %d were lost, of %d", segments, s.Lost, count*segs)
	}
	// 500 expected; the standard deviation is about 19.
	if s.Lost < 400 || s.Lost > 600 {
		t.Errorf("%d of %d segments lost, want about 25%%", s.Lost, count*segs)
	}
	if s.Cut == 0 || s.Cut > count {
		t.Errorf("%d super-packets cut, of %d", s.Cut, count)
	}
}
