package wanlink

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// testSeq is the first sequence number of testSuperPacket's payload: near
// the top, so that the pieces' sequence numbers wrap around.
const testSeq = 0xffff_ff00

// testSuperPacket builds a TCP/IPv4 super-packet as a TUN device would
// hand it over: segs segments of gsoSize bytes, the last short by short
// bytes, with flags (ACK always).
func testSuperPacket(segs, gsoSize, short int, flags byte) []byte {
	payload := segs*gsoSize - short
	pkt := make([]byte, vnetHdrLen+20+20+payload)
	pkt[0] = vnetFNeedsCsum
	pkt[1] = vnetGSOTCPv4
	binary.NativeEndian.PutUint16(pkt[2:], 40)
	binary.NativeEndian.PutUint16(pkt[4:], uint16(gsoSize))
	binary.NativeEndian.PutUint16(pkt[6:], 20)
	binary.NativeEndian.PutUint16(pkt[8:], 16)
	ip := pkt[vnetHdrLen:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)))
	binary.BigEndian.PutUint16(ip[4:], 0xfffe) // the id wraps too
	ip[6] = 0x40                               // don't fragment
	ip[8] = 64
	ip[9] = 6
	copy(ip[12:], []byte{198, 19, 1, 2, 198, 19, 2, 2})
	binary.BigEndian.PutUint16(ip[10:], ^fold(sum16(ip[:20])))
	tcp := ip[20:]
	binary.BigEndian.PutUint16(tcp[0:], 40000)
	binary.BigEndian.PutUint16(tcp[2:], 5201)
	binary.BigEndian.PutUint32(tcp[4:], testSeq)
	binary.BigEndian.PutUint32(tcp[8:], 12345)
	tcp[12] = 5 << 4
	tcp[13] = 0x10 | flags
	binary.BigEndian.PutUint16(tcp[14:], 65535)
	binary.BigEndian.PutUint16(tcp[16:], fold(sum16(ip[12:20])+6+uint32(len(tcp))))
	for k := range payload {
		tcp[20+k] = byte(k*7 + k>>8)
	}
	return pkt
}

// checksum is the Internet checksum's sum of b, padded to an even length.
func checksum(b []byte) uint32 {
	s := sum16(b)
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	return s
}

// checkPiece checks that got is segments [i, j) of the super-packet orig,
// cut as the kernel would have cut them.
func checkPiece(t *testing.T, orig superPacket, got []byte, i, j int) {
	t.Helper()
	hdrs := vnetHdrLen + orig.ipHL + orig.tcpHL
	payload := orig.pkt[hdrs:]
	from, to := i*orig.gsoSize, min(j*orig.gsoSize, len(payload))
	if len(got) != hdrs+to-from {
		t.Fatalf("piece [%d,%d): %d bytes, want %d", i, j, len(got), hdrs+to-from)
	}
	if !bytes.Equal(got[hdrs:], payload[from:to]) {
		t.Errorf("piece [%d,%d): wrong payload", i, j)
	}
	wantGSO, wantSize := byte(vnetGSONone), 0
	if j-i > 1 {
		wantGSO, wantSize = vnetGSOTCPv4, orig.gsoSize
	}
	if got[0] != vnetFNeedsCsum || got[1] != wantGSO || int(binary.NativeEndian.Uint16(got[4:])) != wantSize ||
		binary.NativeEndian.Uint16(got[6:]) != 20 || binary.NativeEndian.Uint16(got[8:]) != 16 {
		t.Errorf("piece [%d,%d): virtio_net_hdr % x", i, j, got[:vnetHdrLen])
	}
	ip := got[vnetHdrLen:]
	if n := binary.BigEndian.Uint16(ip[2:]); int(n) != len(ip) {
		t.Errorf("piece [%d,%d): IP total length %d, want %d", i, j, n, len(ip))
	}
	if id := binary.BigEndian.Uint16(ip[4:]); id != 0xfffe+uint16(i) {
		t.Errorf("piece [%d,%d): IP id %#x, want %#x", i, j, id, 0xfffe+uint16(i))
	}
	if fold(checksum(ip[:20])) != 0xffff {
		t.Errorf("piece [%d,%d): bad IP header checksum", i, j)
	}
	tcp := ip[20:]
	if seq := binary.BigEndian.Uint32(tcp[4:]); seq != testSeq+uint32(from) {
		t.Errorf("piece [%d,%d): seq %#x, want %#x", i, j, seq, testSeq+uint32(from))
	}
	origFlags := orig.pkt[vnetHdrLen+20+13]
	wantFlags := origFlags
	if i > 0 {
		wantFlags &^= tcpCWR
	}
	if j < orig.segs {
		wantFlags &^= tcpFIN | tcpPSH
	}
	if tcp[13] != wantFlags {
		t.Errorf("piece [%d,%d): flags %#x, want %#x", i, j, tcp[13], wantFlags)
	}
	// The kernel completes the checksum (NEEDS_CSUM) by adding the TCP
	// header and payload to the pseudo-header sum left in the field; the
	// result must then check out as a receiver checks it.
	pseudo := checksum(ip[12:20]) + 6 + uint32(len(tcp))
	if c := binary.BigEndian.Uint16(tcp[16:]); c != fold(pseudo) {
		t.Fatalf("piece [%d,%d): TCP checksum field %#x, want the pseudo-header sum %#x", i, j, c, fold(pseudo))
	}
	done := bytes.Clone(tcp)
	binary.BigEndian.PutUint16(done[16:], ^fold(checksum(done)))
	if fold(pseudo+checksum(done)) != 0xffff {
		t.Errorf("piece [%d,%d): the completed TCP checksum does not check out", i, j)
	}
}

func TestPiece(t *testing.T) {
	const segs, size = 7, 1448
	for _, short := range []int{0, 1, 1447} {
		pkt := testSuperPacket(segs, size, short, tcpPSH|tcpFIN|tcpCWR)
		sp, ok := parseSuperPacket(pkt)
		if !ok || sp.segs != segs || sp.gsoSize != size || sp.ipHL != 20 || sp.tcpHL != 20 {
			t.Fatalf("parseSuperPacket = %+v, %v", sp, ok)
		}
		buf := make([]byte, maxPacket)
		for _, r := range [][2]int{{0, 1}, {0, 3}, {1, 2}, {2, 6}, {3, 7}, {6, 7}, {0, 7}} {
			checkPiece(t, sp, sp.piece(buf, r[0], r[1]), r[0], r[1])
		}
	}
}

func TestParseSuperPacketRefuses(t *testing.T) {
	good := testSuperPacket(3, 1000, 0, 0)
	for name, edit := range map[string]func([]byte) []byte{
		"not GSO":      func(p []byte) []byte { p[1] = vnetGSONone; return p },
		"UDP GSO":      func(p []byte) []byte { p[1] = 3; return p },
		"IPv6":         func(p []byte) []byte { p[vnetHdrLen] = 0x60; return p },
		"UDP":          func(p []byte) []byte { p[vnetHdrLen+9] = 17; return p },
		"gso_size 0":   func(p []byte) []byte { binary.NativeEndian.PutUint16(p[4:], 0); return p },
		"one segment":  func(p []byte) []byte { binary.NativeEndian.PutUint16(p[4:], 3000); return p },
		"short IP hdr": func(p []byte) []byte { p[vnetHdrLen] = 0x44; return p },
		"long TCP hdr": func(p []byte) []byte { p[vnetHdrLen+32] = 0xf0; return p[:vnetHdrLen+40+20] },
		"truncated":    func(p []byte) []byte { return p[:vnetHdrLen+30] },
	} {
		if sp, ok := parseSuperPacket(edit(bytes.Clone(good))); ok {
			t.Errorf("%s: parsed as %+v", name, sp)
		}
	}
}

// FuzzSuperPacket: whatever the TUN device hands over, cutting it never
// panics, and the pieces carry the payload exactly once.
func FuzzSuperPacket(f *testing.F) {
	f.Add(testSuperPacket(3, 1000, 10, tcpPSH), uint8(1))
	f.Add(testSuperPacket(9, 100, 0, 0), uint8(7))
	f.Fuzz(func(t *testing.T, pkt []byte, cut uint8) {
		sp, ok := parseSuperPacket(pkt)
		if !ok {
			return
		}
		k := 1 + int(cut)%(sp.segs-1)
		buf := make([]byte, len(pkt))
		a := bytes.Clone(sp.piece(buf, 0, k))
		b := sp.piece(buf, k, sp.segs)
		hdrs := vnetHdrLen + sp.ipHL + sp.tcpHL
		joined := append(a[hdrs:], b[hdrs:]...)
		if !bytes.Equal(joined, pkt[hdrs:]) {
			t.Fatalf("pieces [0,%d) and [%d,%d) do not add up to the payload", k, k, sp.segs)
		}
	})
}
