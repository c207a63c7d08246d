package mux

import (
	"encoding/binary"
	"fmt"
)

// The frames, on the wire (yamux v0 framing).
//
// Every frame starts with a 12-byte header, big-endian:
//
//	version uint8   always 0
//	type    uint8   typeData, typeWindowUpdate, typePing or typeGoAway
//	flags   uint16  flagSYN, flagACK, flagFIN, flagRST (a set)
//	stream  uint32  the stream's id; 0 for pings and go-away
//	length  uint32  a data frame's body length; a window update's credit
//	                delta; a ping's opaque value; a go-away's code
//
// Only data frames have a body. The protocol flow:
//
//   - Opening. The side that opens streams (Config.Opens: the edge) sends
//     a window update with SYN and a new id, above every id it used
//     before, and may send data at once. The acceptor answers with a
//     window update with ACK when Accept returns the stream, or with RST
//     if it already holds acceptBacklog streams not yet accepted. A SYN
//     from the other side, or with an id not above the last one, breaks
//     the protocol.
//   - Flow control. Each direction of a stream starts with InitialWindow
//     bytes of credit: the sender may send that much before the receiver
//     gives credit back with window updates (the length is added). Data
//     beyond the credit, or a data frame longer than MaxWindow, breaks
//     the protocol.
//   - Half-close: FIN (on a window update or a data frame) ends the
//     sender's direction; the receiver reads what is buffered, then EOF.
//   - Reset: RST aborts both directions; what the receiver had not read
//     is discarded unless a FIN came first.
//   - Ping with SYN asks for an answer: the same frame with ACK and the
//     same opaque value.
//   - Go-away ends the session: the sender writes it after everything
//     else, and the receiver ends its side on it.
const (
	headerSize = 12
	version    = 0

	typeData         = 0
	typeWindowUpdate = 1
	typePing         = 2
	typeGoAway       = 3

	flagSYN = 1
	flagACK = 2
	flagFIN = 4
	flagRST = 8

	// goAwayNormal is the code of a go-away on purpose; goAwayProtocol
	// the code of one sent because the peer broke the protocol.
	goAwayNormal   = 0
	goAwayProtocol = 1
)

// header is a decoded frame header.
type header struct {
	typ    uint8
	flags  uint16
	stream uint32
	length uint32
}

// appendHeader appends the encoding of a frame header to b.
func appendHeader(b []byte, typ uint8, flags uint16, stream, length uint32) []byte {
	b = append(b, version, typ)
	b = binary.BigEndian.AppendUint16(b, flags)
	b = binary.BigEndian.AppendUint32(b, stream)
	return binary.BigEndian.AppendUint32(b, length)
}

// parseHeader decodes a frame header: p holds headerSize bytes. An
// unknown version or type breaks the protocol.
func parseHeader(p []byte) (header, error) {
	h := header{
		typ:    p[1],
		flags:  binary.BigEndian.Uint16(p[2:]),
		stream: binary.BigEndian.Uint32(p[4:]),
		length: binary.BigEndian.Uint32(p[8:]),
	}
	if p[0] != version {
		return h, fmt.Errorf("%w: frame of version %d (want %d)", ErrProtocol, p[0], version)
	}
	if h.typ > typeGoAway {
		return h, fmt.Errorf("%w: frame of unknown type %d", ErrProtocol, h.typ)
	}
	return h, nil
}
