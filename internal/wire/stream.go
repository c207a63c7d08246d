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

// MaxAddress bounds a destination address on the wire.
const MaxAddress = 255

// StreamOpen is the header the edge writes first on every stream: a
// length-prefixed service name, client address and destination address.
//
//	+------+---------+------+--------+------+---------+
//	| 1 B  | n bytes | 1 B  | m bytes| 1 B  | k bytes |
//	| n    | service | m    | client | k    | address |
//	+------+---------+------+--------+------+---------+
//
// Exactly one of service and address is set: a stream names a service,
// or (for a SOCKS client that named a host and port) an address that the
// connector serves only if its allow-list holds it.
type StreamOpen struct {
	Service string // a service name the connector may offer
	Client  string // the client's address as the edge saw it, "ip:port"
	Address string // a destination "host:port" a client asked for, instead of Service
}

// AppendStreamOpen appends the encoded header to b.
func AppendStreamOpen(b []byte, h StreamOpen) ([]byte, error) {
	if (h.Service == "") == (h.Address == "") {
		return b, fmt.Errorf("encode stream header: exactly one of service and address must be set")
	}
	if len(h.Service) > MaxServiceName {
		return b, fmt.Errorf("encode stream header: service name must be 1-%d bytes", MaxServiceName)
	}
	if len(h.Client) > MaxClientAddr {
		return b, fmt.Errorf("encode stream header: client address longer than %d bytes", MaxClientAddr)
	}
	if len(h.Address) > MaxAddress {
		return b, fmt.Errorf("encode stream header: destination address longer than %d bytes", MaxAddress)
	}
	b = append(b, byte(len(h.Service)))
	b = append(b, h.Service...)
	b = append(b, byte(len(h.Client)))
	b = append(b, h.Client...)
	b = append(b, byte(len(h.Address)))
	return append(b, h.Address...), nil
}

// ReadStreamOpen reads a StreamOpen header.
func ReadStreamOpen(r io.Reader) (StreamOpen, error) {
	var buf [256]byte
	first := true
	field := func(what string, max int) (string, error) {
		if _, err := io.ReadFull(r, buf[:1]); err != nil {
			if err == io.EOF && !first {
				err = io.ErrUnexpectedEOF // a header cut short
			}
			return "", fmt.Errorf("read stream header: %w", err)
		}
		first = false
		n := int(buf[0])
		if n > max {
			return "", fmt.Errorf("%w: %s of %d bytes", ErrMalformed, what, n)
		}
		if _, err := io.ReadFull(r, buf[:n]); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return "", fmt.Errorf("read stream header: %w", err)
		}
		return string(buf[:n]), nil
	}
	var h StreamOpen
	var err error
	if h.Service, err = field("service name", MaxServiceName); err != nil {
		return StreamOpen{}, err
	}
	if h.Client, err = field("client address", MaxClientAddr); err != nil {
		return StreamOpen{}, err
	}
	if h.Address, err = field("destination address", MaxAddress); err != nil {
		return StreamOpen{}, err
	}
	if (h.Service == "") == (h.Address == "") {
		return StreamOpen{}, fmt.Errorf("%w: a stream header names a service or an address, not %s", ErrMalformed, map[bool]string{true: "neither", false: "both"}[h.Service == ""])
	}
	return h, nil
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
