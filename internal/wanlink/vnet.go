package wanlink

import (
	"encoding/binary"
)

// A packet read from or written to a TUN device opened with IFF_VNET_HDR
// starts with a struct virtio_net_hdr (linux/virtio_net.h), in the host's
// byte order:
//
//	flags u8, gso_type u8, hdr_len u16, gso_size u16, csum_start u16, csum_offset u16
//
// A TCP/IPv4 super-packet (gso_type TCPV4) is one IPv4 and TCP header
// followed by the payload of several segments of gso_size bytes each (the
// last may be shorter), which the kernel cuts into packets when they
// leave for a device that cannot take them whole, as a sender's TCP
// stack would have.
const (
	vnetHdrLen = 10

	vnetFNeedsCsum = 1    // VIRTIO_NET_HDR_F_NEEDS_CSUM: fill in the checksum at csum_start+csum_offset
	vnetGSONone    = 0    // VIRTIO_NET_HDR_GSO_NONE
	vnetGSOTCPv4   = 1    // VIRTIO_NET_HDR_GSO_TCPV4
	vnetGSOECN     = 0x80 // VIRTIO_NET_HDR_GSO_ECN: the segments carry ECN
)

// maxPacket is the largest packet a TUN device hands over: a TCP/IPv4
// super-packet of 64 KiB and its virtio_net_hdr.
const maxPacket = 65535 + vnetHdrLen

// TCP flags the kernel keeps on only some segments of a super-packet.
const (
	tcpFIN = 0x01
	tcpPSH = 0x08
	tcpCWR = 0x80
)

// superPacket is a TCP/IPv4 super-packet read from a TUN device, with its
// virtio_net_hdr, parsed just enough to be cut between its segments.
type superPacket struct {
	pkt     []byte // the whole of it, header included
	ipHL    int    // IPv4 header length
	tcpHL   int    // TCP header length
	gsoSize int    // payload bytes per segment
	segs    int    // number of segments
	ecn     bool
}

// parseSuperPacket parses pkt, a packet with its virtio_net_hdr. It
// reports false for anything but a well-formed TCP/IPv4 super-packet of
// two or more segments, which the loss treats as one packet.
func parseSuperPacket(pkt []byte) (superPacket, bool) {
	if len(pkt) < vnetHdrLen+20+20 {
		return superPacket{}, false
	}
	gsoType := pkt[1]
	gsoSize := int(binary.NativeEndian.Uint16(pkt[4:]))
	ip := pkt[vnetHdrLen:]
	if gsoType&^vnetGSOECN != vnetGSOTCPv4 || gsoSize == 0 || ip[0]>>4 != 4 || ip[9] != 6 {
		return superPacket{}, false
	}
	ipHL := int(ip[0]&0x0f) * 4
	if ipHL < 20 || len(ip) < ipHL+20 {
		return superPacket{}, false
	}
	tcpHL := int(ip[ipHL+12]>>4) * 4
	if tcpHL < 20 || len(ip) < ipHL+tcpHL {
		return superPacket{}, false
	}
	payload := len(ip) - ipHL - tcpHL
	segs := (payload + gsoSize - 1) / gsoSize
	if segs < 2 {
		return superPacket{}, false
	}
	return superPacket{pkt: pkt, ipHL: ipHL, tcpHL: tcpHL, gsoSize: gsoSize, segs: segs, ecn: gsoType&vnetGSOECN != 0}, true
}

// piece writes into buf (which must hold len(p.pkt) bytes) the packet,
// with its virtio_net_hdr, that carries segments [i, j) of p alone, as the
// kernel's segmentation would have cut them: the sequence number and the
// IPv4 id advanced, FIN and PSH on the last segment only, CWR on the
// first only, the IPv4 checksum computed and the TCP checksum left to the
// kernel (NEEDS_CSUM). It returns the filled part of buf.
func (p superPacket) piece(buf []byte, i, j int) []byte {
	hdrs := vnetHdrLen + p.ipHL + p.tcpHL
	payload := p.pkt[hdrs:]
	from, to := i*p.gsoSize, min(j*p.gsoSize, len(payload))
	n := copy(buf, p.pkt[:hdrs])
	n += copy(buf[n:], payload[from:to])
	out := buf[:n]

	vh := out[:vnetHdrLen]
	vh[0] = vnetFNeedsCsum
	vh[1] = vnetGSONone
	gsoSize := 0
	if j-i > 1 {
		vh[1] = vnetGSOTCPv4
		if p.ecn {
			vh[1] |= vnetGSOECN
		}
		gsoSize = p.gsoSize
	}
	binary.NativeEndian.PutUint16(vh[2:], uint16(p.ipHL+p.tcpHL))
	binary.NativeEndian.PutUint16(vh[4:], uint16(gsoSize))
	binary.NativeEndian.PutUint16(vh[6:], uint16(p.ipHL))
	binary.NativeEndian.PutUint16(vh[8:], 16) // the TCP checksum's offset

	ip := out[vnetHdrLen : vnetHdrLen+p.ipHL]
	binary.BigEndian.PutUint16(ip[2:], uint16(len(out)-vnetHdrLen))
	binary.BigEndian.PutUint16(ip[4:], binary.BigEndian.Uint16(ip[4:])+uint16(i))
	binary.BigEndian.PutUint16(ip[10:], 0)
	binary.BigEndian.PutUint16(ip[10:], ^fold(sum16(ip)))

	tcp := out[vnetHdrLen+p.ipHL:]
	binary.BigEndian.PutUint32(tcp[4:], binary.BigEndian.Uint32(tcp[4:])+uint32(from))
	if i > 0 {
		tcp[13] &^= tcpCWR
	}
	if j < p.segs {
		tcp[13] &^= tcpFIN | tcpPSH
	}
	// With NEEDS_CSUM the checksum field holds the sum of the pseudo
	// header, not complemented; the kernel adds the segment to it.
	pseudo := sum16(ip[12:20]) + 6 + uint32(len(tcp))
	binary.BigEndian.PutUint16(tcp[16:], fold(pseudo))
	return out
}

// sum16 adds b up as big-endian 16-bit words (b has an even length).
func sum16(b []byte) uint32 {
	var s uint32
	for k := 0; k+1 < len(b); k += 2 {
		s += uint32(binary.BigEndian.Uint16(b[k:]))
	}
	return s
}

// fold folds a ones' complement sum into 16 bits.
func fold(s uint32) uint16 {
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}
