package enroll

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/sallyport/sallyport/internal/pki"
	"github.com/sallyport/sallyport/internal/wire"
	"github.com/sallyport/sallyport/internal/wstunnel"
)

const (
	// KeyfileVersion is the keyfile format this package writes and the
	// newest it reads.
	KeyfileVersion = 1
	// MaxKeyfileSize bounds what DecodeKeyfile reads: a real keyfile is a
	// few hundred bytes.
	MaxKeyfileSize = 64 << 10
	// keyfileMarker is the JSON key of a connector keyfile's version: it
	// also says what kind of keyfile the file is.
	keyfileMarker = "sallyport_keyfile"
)

// ErrBadKeyfile is matched (errors.Is) by the errors of DecodeKeyfile,
// ReadKeyfile, Encode and Validate when the keyfile's content is wrong, as
// opposed to a file that cannot be read.
var ErrBadKeyfile = errors.New("bad keyfile")

// KeyfileError lists every problem found in a keyfile's content, each
// naming its JSON field. errors.Is(err, ErrBadKeyfile) holds, and errors.Is
// and errors.As also reach each problem (pki.ErrBadPin,
// ErrMalformedToken, ...).
type KeyfileError struct {
	Problems []error
}

// Error lists the problems, one a line when there are several.
func (e *KeyfileError) Error() string {
	if len(e.Problems) == 1 {
		return "bad keyfile: " + e.Problems[0].Error()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "bad keyfile: %d problems:", len(e.Problems))
	for _, p := range e.Problems {
		b.WriteString("\n  - ")
		b.WriteString(p.Error())
	}
	return b.String()
}

// Is reports whether target is ErrBadKeyfile.
func (e *KeyfileError) Is(target error) bool { return target == ErrBadKeyfile }

// Unwrap returns the problems.
func (e *KeyfileError) Unwrap() []error { return e.Problems }

// badKeyfile returns a *KeyfileError for problems.
func badKeyfile(problems ...error) error { return &KeyfileError{Problems: problems} }

// Keyfile is what an edge hands to the operator of a new connector, as a
// JSON file:
//
//	{"sallyport_keyfile": 1, "name": "site-a", "edges": ["edge.example.com:5500"],
//	 "ca_pin": "sha256:…", "token": "sp1.….…", "expires": "2026-11-22T04:00:00Z"}
//
// It holds a one-time secret: keep it like a password until it is redeemed.
// A Keyfile is a plain value.
type Keyfile struct {
	// Version is the format version; Encode writes KeyfileVersion when it
	// is zero.
	Version int `json:"sallyport_keyfile"`
	// Name is the connector's name, which the edge puts in its certificate:
	// see ValidateName.
	Name string `json:"name"`
	// Edges are the host:port addresses of the edges' tunnel ports, or
	// wss://HOST[:PORT]/PATH addresses of their https listeners (package
	// wstunnel), at least one.
	Edges []string `json:"edges"`
	// CAPin is the pin of the edge CA (pki.PinOf): the connector trusts
	// only an edge that presents this CA.
	CAPin string `json:"ca_pin"`
	// Token is the one-time enrollment token in its text form (Token.String).
	Token string `json:"token"`
	// Expires is when the token stops being accepted. DecodeKeyfile
	// returns it in UTC.
	Expires time.Time `json:"expires"`
}

// Expired reports whether the keyfile's token has expired at now.
func (kf Keyfile) Expired(now time.Time) bool { return !now.Before(kf.Expires) }

// Validate reports every problem of kf at once, each naming its JSON field,
// in one *KeyfileError.
func (kf Keyfile) Validate() error {
	if problems := kf.problems(); len(problems) > 0 {
		return badKeyfile(problems...)
	}
	return nil
}

// fieldError is one problem with one field of a keyfile.
type fieldError struct {
	key   string // the JSON field
	label string // how the message names it: key, or key[index]
	err   error
}

func (e *fieldError) Error() string { return e.label + ": " + e.err.Error() }
func (e *fieldError) Unwrap() error { return e.err }

func problem(key string, err error) error { return &fieldError{key: key, label: key, err: err} }

// problems lists what is wrong with kf's values, each a *fieldError.
func (kf Keyfile) problems() []error {
	var errs []error
	if err := versionProblem(kf.Version, KeyfileVersion); err != nil {
		errs = append(errs, problem(keyfileMarker, err))
	}
	if err := ValidateName(kf.Name); err != nil {
		errs = append(errs, problem("name", err))
	}
	errs = append(errs, edgesProblems(kf.Edges, validateEdge, "host:port or wss://")...)
	if _, err := pki.ParsePin(kf.CAPin); err != nil {
		errs = append(errs, problem("ca_pin", err))
	}
	if _, _, err := ParseToken(kf.Token); err != nil {
		errs = append(errs, problem("token", err))
	}
	if err := expiresProblem(kf.Expires); err != nil {
		errs = append(errs, problem("expires", err))
	}
	return errs
}

// versionProblem checks a keyfile's format version against the newest
// this build reads, max; nil if it is fine.
func versionProblem(v, max int) error {
	switch {
	case v == 0:
		return errors.New("missing; this is not a sallyport keyfile")
	case v > max:
		return fmt.Errorf("version %d is newer than this sallyport reads (%d): upgrade sallyport", v, max)
	case v < 0:
		return fmt.Errorf("version %d is not a version", v)
	}
	return nil
}

// edgesProblems checks a keyfile's edge addresses with check; want says
// what an address looks like, for the message about none.
func edgesProblems(edges []string, check func(string) error, want string) []error {
	if len(edges) == 0 {
		return []error{problem("edges", fmt.Errorf("missing; want at least one %s address", want))}
	}
	var errs []error
	for i, e := range edges {
		if err := check(e); err != nil {
			errs = append(errs, &fieldError{key: "edges", label: fmt.Sprintf("edges[%d]", i), err: err})
		}
	}
	return errs
}

// expiresProblem checks a keyfile's expiry; nil if it is fine.
func expiresProblem(t time.Time) error {
	if t.IsZero() {
		return errors.New("missing")
	}
	if y := t.UTC().Year(); y < 1970 || y > 9999 {
		return fmt.Errorf("year %d is out of range", y)
	}
	return nil
}

// ValidateName checks a connector name against the one rule for names
// (wire.CheckName): it becomes a certificate's common name and travels in
// the tunnel protocol.
func ValidateName(name string) error { return wire.CheckName(name) }

// validateEdge checks one host:port address with a numeric port, or a
// wss://HOST[:PORT]/PATH address of an edge's https listener.
func validateEdge(addr string) error {
	if wstunnel.IsAddress(addr) {
		_, err := wstunnel.ParseAddress(addr)
		return err
	}
	return ValidateHostPort(addr)
}

// ValidateHostPort checks one host:port address with a numeric port from
// 1 to 65535 and a host made of the characters of host names and IP
// addresses.
func ValidateHostPort(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port (put an IPv6 address in brackets: [2001:db8::1]:5500)", addr)
	}
	if host == "" {
		return fmt.Errorf("%q has no host", addr)
	}
	for i := 0; i < len(host); i++ {
		c := host[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '.' || c == '-' || c == '_' || c == ':' || c == '%'
		if !ok {
			return fmt.Errorf("%q: the host has a character that is not allowed in a host name or IP address", addr)
		}
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return fmt.Errorf("%q: the port must be a number from 1 to 65535", addr)
	}
	return nil
}

// Encode returns kf as indented JSON, after checking it with Validate.
func (kf Keyfile) Encode() ([]byte, error) {
	if kf.Version == 0 {
		kf.Version = KeyfileVersion
	}
	kf.Expires = kf.Expires.UTC()
	return encodeKeyfile(kf, kf.Validate())
}

// DecodeKeyfile reads one keyfile from r, strictly: at most MaxKeyfileSize
// bytes, one JSON object, each field once and spelt exactly, no unknown
// field, nothing after the object, and every field valid. Problems with
// fields are reported all at once. A join keyfile is refused with a
// message that says what it is for.
func DecodeKeyfile(r io.Reader) (Keyfile, error) {
	var kf Keyfile
	fields := map[string]any{
		keyfileMarker: &kf.Version,
		"name":        &kf.Name,
		"edges":       &kf.Edges,
		"ca_pin":      &kf.CAPin,
		"token":       &kf.Token,
		"expires":     &kf.Expires,
	}
	problems, failed, err := decodeKeyfileObject(r, fields, joinKeyfileMarker, errJoinKeyfileForConnector)
	if err != nil {
		return Keyfile{}, err
	}
	kf.Expires = kf.Expires.UTC()
	if err := checkDecoded(problems, failed, kf.Version, KeyfileVersion, kf.problems()); err != nil {
		return Keyfile{}, err
	}
	return kf, nil
}

// errJoinKeyfileForConnector and errConnectorKeyfileForJoin say what a
// keyfile of the other kind is for.
var (
	errJoinKeyfileForConnector = errors.New("this is a join keyfile, which makes a new edge or witness part of a cluster " +
		"(sallyport edge --join FILE); a connector needs a connector keyfile: sallyport token create --name NAME")
	errConnectorKeyfileForJoin = errors.New("this is a connector keyfile (sallyport connector --keyfile FILE); " +
		"a new edge or witness needs a join keyfile: sallyport edges join-token")
)

// decodeKeyfileObject reads the keyfile object in r into fields (JSON key
// → destination) and returns the problems with its fields and the set of
// fields that failed to decode. A key named other marks a keyfile of the
// other kind: that is refused with otherErr alone.
func decodeKeyfileObject(r io.Reader, fields map[string]any, other string, otherErr error) (problems []error, failed map[string]bool, err error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxKeyfileSize+1))
	if err != nil {
		return nil, nil, fmt.Errorf("read keyfile: %w", err)
	}
	if len(data) > MaxKeyfileSize {
		return nil, nil, badKeyfile(fmt.Errorf("larger than %d KiB, so not a keyfile", MaxKeyfileSize>>10))
	}
	problems, failed, seen, err := decodeFields(data, fields)
	if err != nil {
		return nil, nil, err
	}
	if seen[other] {
		return nil, nil, badKeyfile(otherErr)
	}
	return problems, failed, nil
}

// checkDecoded joins the problems found while decoding with those of the
// decoded values (valueProblems), leaving out a field that did not decode
// (reported once, not again as missing). A version newer than max
// reports only that: a newer format may differ in any field.
func checkDecoded(problems []error, failed map[string]bool, version, max int, valueProblems []error) error {
	if version > max {
		return badKeyfile(valueProblems[0])
	}
	for _, p := range valueProblems {
		if fe, ok := p.(*fieldError); !ok || !failed[fe.key] {
			problems = append(problems, p)
		}
	}
	if len(problems) > 0 {
		return badKeyfile(problems...)
	}
	return nil
}

// decodeFields fills fields (JSON key → destination) from the JSON object
// in data, and returns the problems with its fields, the set of fields
// that failed to decode and the set of keys seen. Bad JSON is an error of
// its own. encoding/json alone would match keys case-insensitively and
// let a repeated key win silently, so the object is walked key by key.
func decodeFields(data []byte, fields map[string]any) (problems []error, failed, seen map[string]bool, err error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, nil, nil, badKeyfile(errors.New("not a JSON object: a keyfile starts with {"))
	}
	seen = map[string]bool{}
	failed = map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, nil, nil, badKeyfile(fmt.Errorf("invalid JSON: %w", err))
		}
		key, _ := tok.(string) // inside an object, the token here is a key
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, nil, nil, badKeyfile(fmt.Errorf("invalid JSON: %w", err))
		}
		dst, known := fields[key]
		switch {
		case !known:
			problems = append(problems, fmt.Errorf("%q: unknown field", key))
		case seen[key]:
			problems = append(problems, problem(key, errors.New("given more than once")))
		default:
			if err := json.Unmarshal(raw, dst); err != nil {
				problems = append(problems, problem(key, fieldTypeError(key, err)))
				failed[key] = true
			}
		}
		seen[key] = true
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		return nil, nil, nil, badKeyfile(errors.New("invalid JSON: the object is not closed properly"))
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, nil, nil, badKeyfile(errors.New("unexpected data after the JSON object"))
	}
	return problems, failed, seen, nil
}

// fieldTypeError rephrases a JSON type error for one field.
func fieldTypeError(key string, err error) error {
	switch key {
	case keyfileMarker, joinKeyfileMarker:
		return errors.New("want a version number such as 1")
	case "edges":
		return errors.New(`want a list of "host:port" strings`)
	case "expires":
		return fmt.Errorf("want an RFC 3339 time such as \"2026-11-22T04:00:00Z\": %w", err)
	default:
		return errors.New("want a string")
	}
}

// WriteKeyfile encodes kf and writes it to path with mode 0600, replacing
// any file there at once (never leaving half a keyfile).
func WriteKeyfile(path string, kf Keyfile) error {
	return writeKeyfileFile(path, kf.Encode)
}

// ReadKeyfile reads and decodes the keyfile at path. Its errors name the
// path; content problems match ErrBadKeyfile.
func ReadKeyfile(path string) (Keyfile, error) {
	return readKeyfileFile(path, DecodeKeyfile)
}
