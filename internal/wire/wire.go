// Package wire defines the bytes that sallyport's edge and connector exchange
// on a tunnel connection, apart from the multiplexer's own framing.
//
// # Protocol flow
//
// A tunnel connection is one TLS 1.3 connection from the connector to the
// edge's tunnel port. On it:
//
//  1. Both sides write a Preamble at once: the 8-byte magic "SALLYPRT"
//     followed by the protocol version as a big-endian uint16. Each side reads
//     the other's and stops with a VersionError if they differ, so a mismatch
//     is reported clearly on both ends whatever else the versions changed.
//  2. The connector sends one Message: either a Hello (a tunnel: it must have
//     presented its client certificate) or an EnrollRequest (enrollment: no
//     client certificate yet, it presents a one-time token and a CSR).
//  3. The edge answers with one Message: Welcome or EnrollResponse on
//     success, Refusal otherwise. A Refusal carries a Code and a reason meant
//     for the connector's operator; the connection closes after it.
//  4. After a Welcome, both sides run the stream multiplexer on the same
//     connection. After an EnrollResponse the connection closes.
//
// For each client connection the edge opens one multiplexed stream and
// writes a StreamOpen header on it (service name and client address). The
// connector answers with a StreamReply (accepted, or refused with a code and
// reason) and from then on the stream carries the client's bytes both ways.
// The edge may send client bytes right after the header, before the reply
// arrives; the connector keeps them queued until the back-end is dialed.
//
// Every parser here reads untrusted bytes: sizes are bounded before anything
// is allocated, and malformed input yields an error wrapping ErrMalformed.
package wire

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Version is the tunnel protocol version this build speaks.
const Version uint16 = 1

// Magic opens every tunnel connection, in both directions.
const Magic = "SALLYPRT"

// MaxMessage bounds the JSON body of a handshake message.
const MaxMessage = 64 << 10

// ErrMalformed marks bytes that do not follow this protocol.
var ErrMalformed = errors.New("malformed tunnel protocol data")

// VersionError reports a peer that speaks another protocol version.
type VersionError struct {
	Local, Remote uint16
}

func (e *VersionError) Error() string {
	return fmt.Sprintf("protocol version mismatch: peer speaks version %d, this build speaks version %d; run the same sallyport release on edge and connector", e.Remote, e.Local)
}

// WritePreamble writes the magic and version.
func WritePreamble(w io.Writer, version uint16) error {
	var b [len(Magic) + 2]byte
	copy(b[:], Magic)
	binary.BigEndian.PutUint16(b[len(Magic):], version)
	_, err := w.Write(b[:])
	return err
}

// ReadPreamble reads the peer's preamble and returns its version. It
// returns an error wrapping ErrMalformed if the peer is not speaking this
// protocol at all, and a *VersionError if its version differs from local.
func ReadPreamble(r io.Reader, local uint16) error {
	var b [len(Magic) + 2]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return fmt.Errorf("read preamble: %w", err)
	}
	if string(b[:len(Magic)]) != Magic {
		return fmt.Errorf("%w: the peer is not a sallyport tunnel endpoint", ErrMalformed)
	}
	if v := binary.BigEndian.Uint16(b[len(Magic):]); v != local {
		return &VersionError{Local: local, Remote: v}
	}
	return nil
}

// Kind identifies a handshake message.
type Kind uint8

// Handshake message kinds.
const (
	KindHello Kind = iota + 1
	KindWelcome
	KindRefusal
	KindEnrollRequest
	KindEnrollResponse
)

func (k Kind) String() string {
	switch k {
	case KindHello:
		return "hello"
	case KindWelcome:
		return "welcome"
	case KindRefusal:
		return "refusal"
	case KindEnrollRequest:
		return "enroll request"
	case KindEnrollResponse:
		return "enroll response"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Hello is the connector's opening message on a tunnel.
type Hello struct {
	// Instance identifies this run of the connector process, so the edge
	// can tell a pool of tunnels from one connector apart from replicas.
	Instance string `json:"instance"`
	// Services names what the connector offers; never back-end addresses.
	Services []string `json:"services"`
}

// Welcome is the edge's acceptance of a Hello.
type Welcome struct {
	EdgeID string `json:"edge_id"`
	// Edges lists the tunnel addresses of every edge in the cluster, so the
	// connector can keep a tunnel to each.
	Edges []string `json:"edges,omitempty"`
}

// EnrollRequest redeems a one-time token for a certificate.
type EnrollRequest struct {
	Token string `json:"token"`
	CSR   []byte `json:"csr"` // DER
}

// EnrollResponse carries the connector's certificate.
type EnrollResponse struct {
	Certificate []byte   `json:"certificate"` // DER
	CA          []byte   `json:"ca"`          // DER
	ConnectorID string   `json:"connector_id"`
	Edges       []string `json:"edges,omitempty"`
}

// Code says why something was refused.
type Code uint8

// Refusal and stream reply codes.
const (
	CodeOK Code = iota
	CodeUnknownService
	CodeBackendUnreachable
	CodeDraining
	CodeNotEnrolled
	CodeRevoked
	CodeTokenMalformed
	CodeTokenUnknown
	CodeTokenMismatch
	CodeTokenUsed
	CodeTokenExpired
	CodeBadRequest
	CodeInternal
	codeLimit
)

func (c Code) String() string {
	switch c {
	case CodeOK:
		return "ok"
	case CodeUnknownService:
		return "unknown service"
	case CodeBackendUnreachable:
		return "back-end unreachable"
	case CodeDraining:
		return "draining"
	case CodeNotEnrolled:
		return "not enrolled"
	case CodeRevoked:
		return "revoked"
	case CodeTokenMalformed:
		return "token malformed"
	case CodeTokenUnknown:
		return "token unknown"
	case CodeTokenMismatch:
		return "token mismatch"
	case CodeTokenUsed:
		return "token used"
	case CodeTokenExpired:
		return "token expired"
	case CodeBadRequest:
		return "bad request"
	case CodeInternal:
		return "internal error"
	}
	return fmt.Sprintf("code(%d)", uint8(c))
}

// Refusal is the edge's "no", sent instead of a Welcome or EnrollResponse.
// It is also the error value a caller receives for one.
type Refusal struct {
	Code   Code   `json:"code"`
	Reason string `json:"reason"`
}

// Refused marks a Refusal for pipe.Join: the client gets a plain close.
func (r *Refusal) Refused() bool { return true }

func (r *Refusal) Error() string { return fmt.Sprintf("refused (%s): %s", r.Code, r.Reason) }

// WriteMessage writes one handshake message: kind (1 byte), body length
// (4 bytes, big-endian) and the JSON body.
func WriteMessage(w io.Writer, kind Kind, v any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", kind, err)
	}
	if len(body) > MaxMessage {
		return fmt.Errorf("encode %s: %d bytes exceed the %d-byte limit", kind, len(body), MaxMessage)
	}
	b := make([]byte, 5, 5+len(body))
	b[0] = byte(kind)
	binary.BigEndian.PutUint32(b[1:], uint32(len(body)))
	_, err = w.Write(append(b, body...))
	return err
}

// ReadMessage reads one handshake message and returns its kind and raw
// JSON body. Use Decode to turn the body into the expected type.
func ReadMessage(r io.Reader) (Kind, []byte, error) {
	var h [5]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, fmt.Errorf("read message header: %w", err)
	}
	kind := Kind(h[0])
	if kind < KindHello || kind > KindEnrollResponse {
		return 0, nil, fmt.Errorf("%w: unknown message kind %d", ErrMalformed, h[0])
	}
	n := binary.BigEndian.Uint32(h[1:])
	if n > MaxMessage {
		return 0, nil, fmt.Errorf("%w: %s of %d bytes exceeds the %d-byte limit", ErrMalformed, kind, n, MaxMessage)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, nil, fmt.Errorf("read %s: %w", kind, err)
	}
	return kind, body, nil
}

// Decode parses a message body into v, rejecting unknown fields.
func Decode(kind Kind, body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrMalformed, kind, err)
	}
	// More would let a stray '}' or ']' through: only the end of the body
	// may follow the value.
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("%w: %s: trailing data", ErrMalformed, kind)
	}
	return nil
}

// ReadExpect reads one message and decodes it into v if its kind is want.
// A Refusal is returned as a *Refusal error; any other kind is malformed.
func ReadExpect(r io.Reader, want Kind, v any) error {
	kind, body, err := ReadMessage(r)
	if err != nil {
		return err
	}
	switch kind {
	case want:
		return Decode(kind, body, v)
	case KindRefusal:
		var ref Refusal
		if err := Decode(kind, body, &ref); err != nil {
			return err
		}
		if ref.Code >= codeLimit {
			return fmt.Errorf("%w: refusal code %d", ErrMalformed, ref.Code)
		}
		return &ref
	}
	return fmt.Errorf("%w: expected %s, got %s", ErrMalformed, want, kind)
}
