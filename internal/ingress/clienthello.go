package ingress

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"golang.org/x/crypto/cryptobyte"
)

// TLS record and handshake constants (RFC 8446).
const (
	recordTypeAlert     = 21
	recordTypeHandshake = 22
	recordHeaderLen     = 5
	maxRecordLen        = 1<<14 + 256 // plaintext limit, plus the slack TLS 1.2 peers take
	typeClientHello     = 1
	extServerName       = 0
	nameTypeHostName    = 0
	// maxHelloLen bounds a ClientHello; real ones are a few hundred bytes
	// to a few kilobytes (post-quantum key shares included).
	maxHelloLen = 1 << 16
)

// errNotTLS is returned for bytes that are not a TLS handshake record.
var errNotTLS = errors.New("not a TLS handshake record")

// errBadHello is returned for a ClientHello that breaks the format.
var errBadHello = errors.New("malformed TLS ClientHello")

// readClientHello reads TLS records from r until it holds a whole
// ClientHello, which may span several records, and returns every byte it
// read (to be passed on unchanged) and the server name the client asked
// for ("" when it sent none). It reads no further than the ClientHello's
// last record. Errors wrap errNotTLS or errBadHello when the bytes are at
// fault, or are r's own.
func readClientHello(r io.Reader) (raw []byte, serverName string, err error) {
	var msg []byte // handshake bytes, reassembled
	for {
		var hdr [recordHeaderLen]byte
		if len(raw) == 0 {
			// Judge the first byte alone, so that a client that sends a
			// line and waits is refused at once.
			if _, err := io.ReadFull(r, hdr[:1]); err != nil {
				return raw, "", err
			}
			if hdr[0] != recordTypeHandshake {
				return hdr[:1], "", fmt.Errorf("%w: first byte %#x", errNotTLS, hdr[0])
			}
			if _, err := io.ReadFull(r, hdr[1:]); err != nil {
				return hdr[:1], "", err
			}
		} else if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return raw, "", err
		}
		raw = append(raw, hdr[:]...)
		if hdr[0] != recordTypeHandshake || hdr[1] != 3 {
			return raw, "", fmt.Errorf("%w: record type %d, version %#x%02x", errNotTLS, hdr[0], hdr[1], hdr[2])
		}
		n := int(binary.BigEndian.Uint16(hdr[3:]))
		if n == 0 || n > maxRecordLen {
			return raw, "", fmt.Errorf("%w: record of %d bytes", errBadHello, n)
		}
		start := len(raw)
		raw = append(raw, make([]byte, n)...)
		if _, err := io.ReadFull(r, raw[start:]); err != nil {
			return raw[:start], "", err
		}
		msg = append(msg, raw[start:]...)
		if len(msg) < 4 {
			continue
		}
		if msg[0] != typeClientHello {
			return raw, "", fmt.Errorf("%w: first handshake message has type %d", errBadHello, msg[0])
		}
		total := 4 + (int(msg[1])<<16 | int(msg[2])<<8 | int(msg[3]))
		if total > maxHelloLen {
			return raw, "", fmt.Errorf("%w: %d bytes", errBadHello, total)
		}
		if len(msg) < total {
			continue
		}
		if len(msg) > total {
			// Another handshake message after the ClientHello in the same
			// flight is not something a client sends.
			return raw, "", fmt.Errorf("%w: %d bytes after it", errBadHello, len(msg)-total)
		}
		name, err := parseClientHello(msg[4:total])
		return raw, name, err
	}
}

// parseClientHello returns the host name of a ClientHello body's
// server_name extension (RFC 6066), lower-cased; "" when there is none.
func parseClientHello(body []byte) (string, error) {
	s := cryptobyte.String(body)
	var version uint16
	var random, sessionID, suites, compression cryptobyte.String
	if !s.ReadUint16(&version) || !s.ReadBytes((*[]byte)(&random), 32) ||
		!s.ReadUint8LengthPrefixed(&sessionID) || len(sessionID) > 32 ||
		!s.ReadUint16LengthPrefixed(&suites) || len(suites) == 0 || len(suites)%2 != 0 ||
		!s.ReadUint8LengthPrefixed(&compression) || len(compression) == 0 {
		return "", fmt.Errorf("%w: truncated or inconsistent fixed fields", errBadHello)
	}
	if s.Empty() {
		return "", nil // no extensions
	}
	var exts cryptobyte.String
	if !s.ReadUint16LengthPrefixed(&exts) || !s.Empty() {
		return "", fmt.Errorf("%w: bad extensions block", errBadHello)
	}
	name, found := "", false
	seen := map[uint16]bool{}
	for !exts.Empty() {
		var typ uint16
		var data cryptobyte.String
		if !exts.ReadUint16(&typ) || !exts.ReadUint16LengthPrefixed(&data) {
			return "", fmt.Errorf("%w: truncated extension", errBadHello)
		}
		if seen[typ] {
			return "", fmt.Errorf("%w: extension %d sent twice", errBadHello, typ)
		}
		seen[typ] = true
		if typ != extServerName {
			continue
		}
		var list cryptobyte.String
		if !data.ReadUint16LengthPrefixed(&list) || !data.Empty() || list.Empty() {
			return "", fmt.Errorf("%w: bad server_name extension", errBadHello)
		}
		for !list.Empty() {
			var nameType uint8
			var host cryptobyte.String
			if !list.ReadUint8(&nameType) || !list.ReadUint16LengthPrefixed(&host) {
				return "", fmt.Errorf("%w: bad server_name entry", errBadHello)
			}
			if nameType != nameTypeHostName {
				continue
			}
			if found {
				return "", fmt.Errorf("%w: two host names in server_name", errBadHello)
			}
			h, ok := serverName(host)
			if !ok {
				return "", fmt.Errorf("%w: server name %q is not a DNS name", errBadHello, string(host))
			}
			name, found = h, true
		}
	}
	return name, nil
}

// serverName checks a server_name host name: a DNS name of letters,
// digits, '-', '_' and dots, without a trailing dot (RFC 6066), at most
// 253 bytes; it is returned lower-cased.
func serverName(b []byte) (string, bool) {
	if len(b) == 0 || len(b) > 253 || b[0] == '.' || b[len(b)-1] == '.' {
		return "", false
	}
	out := make([]byte, len(b))
	label := 0
	for i, ch := range b {
		switch {
		case ch >= 'A' && ch <= 'Z':
			ch += 'a' - 'A'
		case ch >= 'a' && ch <= 'z', ch >= '0' && ch <= '9', ch == '-', ch == '_':
		case ch == '.':
			if label == 0 {
				return "", false
			}
			label = -1
		default:
			return "", false
		}
		label++
		if label > 63 {
			return "", false
		}
		out[i] = ch
	}
	return string(out), true
}

// tlsAlert is a fatal TLS alert record with the given description: how a
// tls listener turns a client away in words its TLS stack can print.
func tlsAlert(desc byte) []byte {
	return []byte{recordTypeAlert, 3, 3, 0, 2, 2, desc}
}

// TLS alert descriptions (RFC 8446, section 6).
const (
	alertHandshakeFailure = 40
	alertAccessDenied     = 49
	alertInternalError    = 80
	alertUnrecognizedName = 112
)
