package wire

import (
	"encoding/binary"
	"fmt"
	"io"
)

// MaxServiceName bounds a service name on the wire.
const MaxServiceName = 63

// MaxClientAddr bounds a client address on the wire.
const MaxClientAddr = 255

// MaxReason bounds the reason text of a StreamReply.
const MaxReason = 1024

// StreamOpen is the header the edge writes first on every stream:
// a length-prefixed service name and a length-prefixed client address.
//
//	+------+---------+------+--------+
//	| 1 B  | n bytes | 1 B  | m bytes|
//	| n    | service | m    | client |
//	+------+---------+------+--------+
type StreamOpen struct {
	Service string // a service name the connector may offer
	Client  string // the client's address as the edge saw it, "ip:port"
}

// AppendStreamOpen appends the encoded header to b.
func AppendStreamOpen(b []byte, h StreamOpen) ([]byte, error) {
	if h.Service == "" || len(h.Service) > MaxServiceName {
		return b, fmt.Errorf("encode stream header: service name must be 1-%d bytes", MaxServiceName)
	}
	if len(h.Client) > MaxClientAddr {
		return b, fmt.Errorf("encode stream header: client address longer than %d bytes", MaxClientAddr)
	}
	b = append(b, byte(len(h.Service)))
	b = append(b, h.Service...)
	b = append(b, byte(len(h.Client)))
	return append(b, h.Client...), nil
}

// ReadStreamOpen reads a StreamOpen header.
func ReadStreamOpen(r io.Reader) (StreamOpen, error) {
	var buf [1 + MaxServiceName + 1 + MaxClientAddr]byte
	if _, err := io.ReadFull(r, buf[:1]); err != nil {
		return StreamOpen{}, fmt.Errorf("read stream header: %w", err)
	}
	n := int(buf[0])
	if n == 0 || n > MaxServiceName {
		return StreamOpen{}, fmt.Errorf("%w: service name of %d bytes", ErrMalformed, n)
	}
	if _, err := io.ReadFull(r, buf[:n+1]); err != nil {
		return StreamOpen{}, fmt.Errorf("read stream header: %w", err)
	}
	service := string(buf[:n])
	m := int(buf[n])
	if _, err := io.ReadFull(r, buf[:m]); err != nil {
		return StreamOpen{}, fmt.Errorf("read stream header: %w", err)
	}
	return StreamOpen{Service: service, Client: string(buf[:m])}, nil
}

// StreamReply is the connector's answer to a StreamOpen:
//
//	+------+--------+---------+
//	| 1 B  | 2 B    | n bytes |
//	| code | n (BE) | reason  |
//	+------+--------+---------+
//
// CodeOK with an empty reason accepts the stream.
type StreamReply struct {
	Code   Code
	Reason string
}

// Err returns nil for an accepted stream and the reply as an error otherwise.
func (r StreamReply) Err() error {
	if r.Code == CodeOK {
		return nil
	}
	return &Refusal{Code: r.Code, Reason: r.Reason}
}

// AppendStreamReply appends the encoded reply to b, cutting an over-long reason.
func AppendStreamReply(b []byte, r StreamReply) []byte {
	reason := r.Reason
	if len(reason) > MaxReason {
		reason = reason[:MaxReason]
	}
	b = append(b, byte(r.Code))
	b = binary.BigEndian.AppendUint16(b, uint16(len(reason)))
	return append(b, reason...)
}

// ReadStreamReply reads a StreamReply.
func ReadStreamReply(r io.Reader) (StreamReply, error) {
	var h [3]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return StreamReply{}, fmt.Errorf("read stream reply: %w", err)
	}
	code := Code(h[0])
	if code >= codeLimit {
		return StreamReply{}, fmt.Errorf("%w: stream reply code %d", ErrMalformed, h[0])
	}
	n := int(binary.BigEndian.Uint16(h[1:]))
	if n > MaxReason {
		return StreamReply{}, fmt.Errorf("%w: stream reply reason of %d bytes", ErrMalformed, n)
	}
	reason := make([]byte, n)
	if _, err := io.ReadFull(r, reason); err != nil {
		return StreamReply{}, fmt.Errorf("read stream reply: %w", err)
	}
	return StreamReply{Code: code, Reason: string(reason)}, nil
}
