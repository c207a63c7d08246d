// Package wire defines every byte that sallyport's edge and connector
// exchange on a tunnel connection, apart from the multiplexer's own
// framing: the preamble, the handshake messages and the stream headers,
// with the protocol version. The tunnel package
// moves these frames; nothing else writes or parses them.
//
// # Protocol flow
//
// A tunnel connection is one TLS 1.3 connection that the connector dials
// to the edge's tunnel port. On it, in this order:
//
//  1. Preamble, both ways at once: Magic and Version. Each side reads the
//     other's and stops with a VersionError if they differ, so a mismatch
//     is reported clearly on both ends whatever else the versions changed.
//  2. A handshake Message from the connector: a Hello (a tunnel: it has
//     presented its client certificate), an EnrollRequest (enrollment:
//     no client certificate yet, a one-time token and a CSR instead) or
//     a RenewRequest (renewal: a CSR for a new key, on a connection made
//     with the certificate it renews, which must still be valid).
//     2b. Or, from a new edge or witness rather than a connector, a
//     JoinRequest (joining the cluster, see below).
//     2c. Or a TimeRequest, from `sallyport doctor`: a check, with or
//     without a client certificate, that opens no tunnel, redeems no
//     token and stores nothing.
//  3. A handshake Message from the edge: Welcome after a Hello,
//     EnrollResponse after an EnrollRequest, RenewResponse after a
//     RenewRequest, JoinResponse after a JoinRequest, TimeResponse (the
//     edge's clock) after a TimeRequest, or a Refusal with
//     a Code and a reason meant for the connector's operator. After an
//     EnrollResponse, a RenewResponse, a JoinResponse, a TimeResponse or
//     a Refusal the connection closes.
//  4. After a Welcome, both sides run the stream multiplexer (yamux v0
//     framing, as package mux speaks it, with its 256 KiB initial
//     window) on the same connection.
//     Everything below travels in its streams. Liveness: each side sends
//     a multiplexer ping every keepalive interval
//     (DefaultKeepaliveInterval), and a side that has read nothing at all
//     from its peer for its keepalive timeout (DefaultKeepaliveTimeout)
//     ends the session; any byte proves the peer alive, so a ping that
//     waits behind bulk data costs nothing. A side that aborts a stream
//     its peer may still be sending on resets it (the multiplexer's RST):
//     the peer's reads and writes on it fail at once, and never end as a
//     clean end of stream. A side that ends the session on purpose sends
//     the multiplexer's go-away after everything else; streams the peer
//     has not read to their end yet are then complete if their sender
//     finished them (FIN), and cut off if not.
//  5. (Version 2 had the connector open a control stream here, for pings,
//     resets and a goodbye; version 3 has none.)
//  6. For each client connection the edge opens one stream and writes a
//     StreamOpen header naming a service and the client's address, then
//     the client's bytes at once, without waiting; the connector keeps
//     them queued until the back-end is dialed. The connector answers
//     with a StreamReply: accepted (naming the service it serves the
//     stream as) or refused (a Code and a reason), then the back-end's
//     bytes. A half-close is the multiplexer's FIN. A refusal, and the
//     answer to a lookup (step 7), end the connector's sending (FIN). The
//     connector opens no stream: a connector that does breaks the protocol,
//     and the edge ends its session.
//  7. A SOCKS client may name a destination address instead of a
//     service. The edge then first opens a lookup: a stream whose
//     StreamOpen names the address (and the client's address) and is
//     followed by nothing. The connector answers with a StreamReply and
//     ends the stream: accepted, naming the service its allow-list serves
//     that address as, or refused (CodeUnknownService if the allow-list
//     lacks the address, CodeDraining while it shuts down). It dials
//     nothing and writes no PROXY header for a lookup. The edge applies
//     the named service's policy to the client and only then, on the
//     same tunnel, opens a stream for that service as in step 6. (Version
//     1 had the connector dial the address at once, before the edge's
//     policy had been applied.)
//  8. The edge tells the connector which edges the cluster has: the
//     Welcome's Edges first, and then, whenever the set changes, a
//     membership stream: a StreamOpen naming the reserved service
//     EdgesService (no client, no address), followed by the whole set
//     (AppendEdgeSet: at most MaxEdges entries of an edge id and one of
//     its tunnel addresses) and the edge's FIN. The connector answers
//     with a StreamReply (accepted, or CodeBadRequest for a set it cannot
//     read, which it then ignores) and ends the stream. Only the edge
//     opens such a stream: the connector opens none (step 6), so it can
//     never make an edge announce anything. A connector of an earlier
//     release answers CodeUnknownService and keeps its tunnel, so this
//     step needs no new protocol version.
//  9. A connector whose services changed (a reload of its config)
//     announces them on a new tunnel: a Hello with the same Instance and
//     the new Services. The edge then opens no new stream on that
//     connector's tunnels of the same Instance that offered another set,
//     and the connector closes those once their streams have ended. No
//     new bytes travel, so this needs no new protocol version either.
//
// # Joining the cluster
//
// A new edge or witness (the joiner) holds a join keyfile made by an
// edge of the cluster (`sallyport edges join-token`): the edges' tunnel
// addresses, the CA's pin, a one-time join token (sj1.<id>.<secret>, of
// which the edge stores only the secret's hash) and its role. The joiner
// dials an edge's tunnel port like an enrolling connector: TLS 1.3
// without a client certificate, accepting the edge only if its chain
// holds the pinned CA (pki.EnrollTLSConfig). After the preambles it sends
// a JoinRequest: the token, a CSR for its new route key, its server name
// (sallyport-<id>) and its cluster advertise address. The edge checks the
// token (it exists, is a join token, matches, is neither used, revoked
// nor expired), that the connection carries no client certificate (a
// connector is no joiner), that it runs a cluster port itself, signs a
// route certificate (server and client authentication, the name as
// common name, the advertise host as its one name), consumes the token
// by compare-and-swap and only then answers with a JoinResponse: the CA
// certificate, the CA's private key for role edge only, the route
// certificate and the routes to dial (its own cluster address, its
// configured routes and those a join gave it). Any refusal is a Refusal
// and changes nothing; failed attempts are slowed for everyone
// (CodeBusy) once they come too fast. The joiner checks that the CA it
// got is the pinned one, that the CA key fits it, that the route
// certificate is for its key, then writes its files and starts.
//
// Join needs no new protocol version: its kinds are new, and an edge
// that predates them reads a JoinRequest as malformed and closes the
// connection without an answer, which the joiner reports as "the edge
// may be older than this sallyport". Connectors never send or receive
// these kinds, so edges and connectors of either release still talk.
//
// The time request needs no new protocol version either, for the same
// reason: an edge that predates it closes the connection without an
// answer, which `sallyport doctor` reports as an edge too old to say.
//
// Every parser here reads untrusted bytes: sizes are bounded before
// anything is allocated, and malformed input yields an error wrapping
// ErrMalformed.
package wire

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// Version is the tunnel protocol version this build speaks. Version 2
// made a StreamOpen that names an address a lookup (step 7 of the
// protocol flow): the same bytes as in version 1, which dialed at once,
// so the two must refuse each other. Version 3 moved pings, resets and
// the goodbye from a control stream into the multiplexer's own frames
// (step 4).
const Version uint16 = 3

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
	KindRenewRequest
	KindRenewResponse
	KindJoinRequest
	KindJoinResponse
	KindTimeRequest
	KindTimeResponse
	kindLimit
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
	case KindRenewRequest:
		return "renew request"
	case KindRenewResponse:
		return "renew response"
	case KindJoinRequest:
		return "join request"
	case KindJoinResponse:
		return "join response"
	case KindTimeRequest:
		return "time request"
	case KindTimeResponse:
		return "time response"
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

// TimeRequest asks the edge for its clock's time (step 2c of the
// protocol flow), so that `sallyport doctor` can measure the skew between
// the connector's clock and the edge's, which certificates and tokens
// are checked against. It has no fields.
type TimeRequest struct{}

// TimeResponse is the edge's answer to a TimeRequest: its clock's time
// when it answered. The asker takes the middle of its own send and
// receive times as the moment the edge read its clock; the error of the
// skew it computes is at most half the round trip.
type TimeResponse struct {
	Time time.Time `json:"time"`
}

// Welcome is the edge's acceptance of a Hello.
type Welcome struct {
	EdgeID string `json:"edge_id"`
	// Edges lists the tunnel addresses of every edge in the cluster, so the
	// connector can keep a tunnel to each.
	Edges []string `json:"edges,omitempty"`
	// Refused lists the offered services the edge will not route to this
	// connector (not granted to it), each with the reason; the others are
	// served. A later grant applies without a new tunnel.
	Refused []ServiceRefusal `json:"refused,omitempty"`
}

// ServiceRefusal is an offered service the edge refuses, and why.
type ServiceRefusal struct {
	Service string `json:"service"`
	Reason  string `json:"reason"`
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

// RenewRequest asks for a new certificate for the identity of the client
// certificate the connection was made with, for a new key.
type RenewRequest struct {
	CSR []byte `json:"csr"` // DER
}

// RenewResponse carries the renewed certificate: same identity, new key,
// new validity.
type RenewResponse struct {
	Certificate []byte `json:"certificate"` // DER
}

// JoinRequest redeems a one-time join token (step 2b of the protocol
// flow): a new edge or witness asks to become a member of the cluster.
type JoinRequest struct {
	// Token is the join token's text form (sj1.<id>.<secret>).
	Token string `json:"token"`
	// CSR is a PKCS #10 request (DER) for the joiner's route key.
	CSR []byte `json:"csr"`
	// Name is the joiner's server name, sallyport-<its id>: its route
	// certificate's common name.
	Name string `json:"name"`
	// Advertise is the host:port at which the other members reach the
	// joiner's cluster port; its host goes into the route certificate.
	Advertise string `json:"advertise"`
}

// JoinResponse admits a joiner to the cluster.
type JoinResponse struct {
	// CA is the cluster CA's certificate (DER).
	CA []byte `json:"ca"`
	// CAKey is the CA's private key (PKCS #8 DER), for a joining edge
	// only: an edge issues connector certificates. Empty for a witness.
	CAKey []byte `json:"ca_key,omitempty"`
	// Certificate is the joiner's route certificate (DER), for its CSR's
	// key, valid for both TLS server and client authentication.
	Certificate []byte `json:"certificate"`
	// Routes are the cluster addresses (host:port) of the members the
	// joiner should dial: at least the answering edge's own. At most
	// MaxRoutes.
	Routes []string `json:"routes"`
}

// MaxRoutes bounds the routes of a JoinResponse.
const MaxRoutes = 64

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
	CodeNameTaken // enrollment: the connector name belongs to another identity
	CodeTokenKind // a token made for another purpose (enrollment, join edge, join witness)
	CodeNoCluster // a join at an edge that runs no cluster port
	CodeBusy      // too many failed attempts of late: try again in a few seconds
	// CodeUnavailable: the edge cannot reach its store now (fenced, or a
	// store election): nothing was decided; try again, or another edge.
	CodeUnavailable
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
	case CodeNameTaken:
		return "name taken"
	case CodeTokenKind:
		return "wrong token kind"
	case CodeNoCluster:
		return "no cluster"
	case CodeBusy:
		return "busy"
	case CodeUnavailable:
		return "unavailable"
	}
	return fmt.Sprintf("code(%d)", uint8(c))
}

// Refusal is the edge's "no", sent instead of a Welcome or EnrollResponse.
// It is also the error value a caller receives for one.
type Refusal struct {
	Code   Code   `json:"code"`
	Reason string `json:"reason"`
}

// Temporary reports whether the refusal says nothing was decided and the
// same request may succeed later or at another edge.
func (r *Refusal) Temporary() bool { return r.Code == CodeUnavailable || r.Code == CodeBusy }

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
	if kind < KindHello || kind >= kindLimit {
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

// Keepalive defaults (step 5 of the protocol flow). A side's timeout must
// exceed its interval, and the peer's interval, so that a live peer's ping
// always arrives in time; with the same settings on both sides, as these
// defaults are, one rule covers both.
const (
	DefaultKeepaliveInterval = 5 * time.Second
	DefaultKeepaliveTimeout  = 15 * time.Second
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
// Exactly one of service and address is set. A stream that names a
// service carries a client connection (step 6 of the protocol flow); one
// that names an address (for a SOCKS client that named a host and port)
// is a lookup (step 7): the connector only says which of its services,
// if any, its allow-list serves that address as, and dials nothing.
type StreamOpen struct {
	Service string // a service name the connector may offer
	Client  string // the client's address as the edge saw it, "ip:port"
	Address string // a destination "host:port" a client asked for, to look up instead of Service
}

// Lookup reports whether the header opens a lookup (it names an address)
// rather than a stream to a service.
func (h StreamOpen) Lookup() bool { return h.Address != "" }

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

// StreamReply is the connector's answer to a StreamOpen (steps 6 and 7):
//
//	+------+--------+---------+
//	| 1 B  | 2 B    | n bytes |
//	| code | n (BE) | text    |
//	+------+--------+---------+
//
// The text is Service when the code is CodeOK and Reason otherwise: an
// acceptance has no reason and a refusal serves no service, so one field
// on the wire carries whichever the code calls for.
type StreamReply struct {
	Code Code
	// Service is, in an acceptance, the service the connector serves the
	// stream as or, for a lookup, the service its allow-list serves the
	// address as: the one the client is then admitted under. Empty means
	// the one the StreamOpen named. At most MaxServiceName bytes; empty
	// in a refusal.
	Service string
	// Reason says why a refusal refused, for the client's operator. An
	// encoder cuts it to MaxReason bytes; empty in an acceptance.
	Reason string
}

// Err returns nil for an accepted stream and the reply as an error otherwise.
func (r StreamReply) Err() error {
	if r.Code == CodeOK {
		return nil
	}
	return &Refusal{Code: r.Code, Reason: r.Reason}
}

// AppendStreamReply appends the encoded reply to b, cutting an over-long
// reason. It refuses a reply that cannot be read back as itself.
func AppendStreamReply(b []byte, r StreamReply) ([]byte, error) {
	text := r.Reason
	switch {
	case r.Code >= codeLimit:
		return b, fmt.Errorf("encode stream reply: unknown code %d", uint8(r.Code))
	case r.Code == CodeOK && r.Reason != "":
		return b, fmt.Errorf("encode stream reply: an acceptance has no reason (got %q)", r.Reason)
	case r.Code == CodeOK && len(r.Service) > MaxServiceName:
		return b, fmt.Errorf("encode stream reply: service name must be at most %d bytes", MaxServiceName)
	case r.Code == CodeOK:
		text = r.Service
	case r.Service != "":
		return b, fmt.Errorf("encode stream reply: a refusal (%s) names no service (got %q)", r.Code, r.Service)
	case len(text) > MaxReason:
		text = text[:MaxReason]
	}
	b = append(b, byte(r.Code))
	b = binary.BigEndian.AppendUint16(b, uint16(len(text)))
	return append(b, text...), nil
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
	switch {
	case code == CodeOK && n > MaxServiceName:
		return StreamReply{}, fmt.Errorf("%w: stream reply service name of %d bytes", ErrMalformed, n)
	case n > MaxReason:
		return StreamReply{}, fmt.Errorf("%w: stream reply reason of %d bytes", ErrMalformed, n)
	}
	text := make([]byte, n)
	if _, err := io.ReadFull(r, text); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return StreamReply{}, fmt.Errorf("read stream reply: %w", err)
	}
	if code == CodeOK {
		return StreamReply{Code: code, Service: string(text)}, nil
	}
	return StreamReply{Code: code, Reason: string(text)}, nil
}
