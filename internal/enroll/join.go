package enroll

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/sallyport/sallyport/internal/atomicfile"
	"github.com/sallyport/sallyport/internal/pki"
)

const (
	// JoinKeyfileVersion is the join keyfile format this package writes
	// and the newest it reads.
	JoinKeyfileVersion = 1
	// joinKeyfileMarker is the JSON key of a join keyfile's version: a
	// connector keyfile never has it, so neither passes for the other.
	joinKeyfileMarker = "sallyport_join_keyfile"
)

// Role is what a join keyfile makes of its redeemer.
type Role string

// The roles a join keyfile can give.
const (
	// RoleEdge is a full edge: it receives the CA's private key, because
	// an edge issues connector certificates.
	RoleEdge Role = "edge"
	// RoleWitness is a store-only member (sallyport store): it receives
	// the CA certificate and its route certificate, never the CA key.
	RoleWitness Role = "witness"
)

// Valid reports whether r is one of the roles.
func (r Role) Valid() bool { return r == RoleEdge || r == RoleWitness }

// JoinKeyfile is what an edge hands to the operator of a new edge or
// witness of its cluster, as a JSON file:
//
//	{"sallyport_join_keyfile": 1, "role": "edge", "edges": ["edge-a.example.com:5500"],
//	 "ca_pin": "sha256:…", "token": "sj1.….…", "expires": "2026-11-22T04:00:00Z"}
//
// Its one-time secret buys, for role edge, the CA's private key: keep the
// file like the CA key itself until it is redeemed (mode 0600, short
// TTL). A JoinKeyfile is a plain value.
type JoinKeyfile struct {
	// Version is the format version; Encode writes JoinKeyfileVersion
	// when it is zero.
	Version int `json:"sallyport_join_keyfile"`
	// Role is what the redeemer becomes.
	Role Role `json:"role"`
	// Edges are the host:port addresses of the tunnel ports of the edges
	// that redeem the token, at least one.
	Edges []string `json:"edges"`
	// CAPin is the pin of the cluster's CA (pki.PinOf): the joiner talks
	// only to an edge that presents this CA.
	CAPin string `json:"ca_pin"`
	// Token is the one-time join token in its text form
	// (Token.JoinString).
	Token string `json:"token"`
	// Expires is when the token stops being accepted. DecodeJoinKeyfile
	// returns it in UTC.
	Expires time.Time `json:"expires"`
}

// Validate reports every problem of kf at once, each naming its JSON
// field, in one *KeyfileError.
func (kf JoinKeyfile) Validate() error {
	if problems := kf.problems(); len(problems) > 0 {
		return badKeyfile(problems...)
	}
	return nil
}

func (kf JoinKeyfile) problems() []error {
	var errs []error
	if err := versionProblem(kf.Version, JoinKeyfileVersion); err != nil {
		errs = append(errs, problem(joinKeyfileMarker, err))
	}
	if !kf.Role.Valid() {
		errs = append(errs, problem("role", fmt.Errorf("%q is not a role: want %q or %q", kf.Role, RoleEdge, RoleWitness)))
	}
	errs = append(errs, edgesProblems(kf.Edges, ValidateHostPort, "host:port")...)
	if _, err := pki.ParsePin(kf.CAPin); err != nil {
		errs = append(errs, problem("ca_pin", err))
	}
	if _, _, err := ParseJoinToken(kf.Token); err != nil {
		errs = append(errs, problem("token", err))
	}
	if err := expiresProblem(kf.Expires); err != nil {
		errs = append(errs, problem("expires", err))
	}
	return errs
}

// Encode returns kf as indented JSON, after checking it with Validate.
func (kf JoinKeyfile) Encode() ([]byte, error) {
	if kf.Version == 0 {
		kf.Version = JoinKeyfileVersion
	}
	kf.Expires = kf.Expires.UTC()
	return encodeKeyfile(kf, kf.Validate())
}

// encodeKeyfile returns v as indented JSON, or the error of its
// validation, invalid.
func encodeKeyfile(v any, invalid error) ([]byte, error) {
	if invalid != nil {
		return nil, fmt.Errorf("encode keyfile: %w", invalid)
	}
	out, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode keyfile: %w", err)
	}
	return append(out, '\n'), nil
}

// DecodeJoinKeyfile reads one join keyfile from r as strictly as
// DecodeKeyfile reads a connector keyfile; a connector keyfile is refused
// with a message that says what it is for.
func DecodeJoinKeyfile(r io.Reader) (JoinKeyfile, error) {
	var kf JoinKeyfile
	fields := map[string]any{
		joinKeyfileMarker: &kf.Version,
		"role":            &kf.Role,
		"edges":           &kf.Edges,
		"ca_pin":          &kf.CAPin,
		"token":           &kf.Token,
		"expires":         &kf.Expires,
	}
	problems, failed, err := decodeKeyfileObject(r, fields, keyfileMarker, errConnectorKeyfileForJoin)
	if err != nil {
		return JoinKeyfile{}, err
	}
	kf.Expires = kf.Expires.UTC()
	if err := checkDecoded(problems, failed, kf.Version, JoinKeyfileVersion, kf.problems()); err != nil {
		return JoinKeyfile{}, err
	}
	return kf, nil
}

// ReadJoinKeyfile reads and decodes the join keyfile at path. Its errors
// name the path; content problems match ErrBadKeyfile.
func ReadJoinKeyfile(path string) (JoinKeyfile, error) {
	return readKeyfileFile(path, DecodeJoinKeyfile)
}

// readKeyfileFile opens path and decodes it with decode.
func readKeyfileFile[K any](path string, decode func(io.Reader) (K, error)) (K, error) {
	var zero K
	f, err := os.Open(path)
	if err != nil {
		return zero, fmt.Errorf("read keyfile: %w", err)
	}
	defer f.Close()
	kf, err := decode(f)
	if err != nil {
		return zero, fmt.Errorf("read keyfile %s: %w", path, err)
	}
	return kf, nil
}

// WriteJoinKeyfile encodes kf and writes it to path with mode 0600,
// replacing any file there at once.
func WriteJoinKeyfile(path string, kf JoinKeyfile) error {
	return writeKeyfileFile(path, kf.Encode)
}

// writeKeyfileFile writes what encode returns to path, mode 0600.
func writeKeyfileFile(path string, encode func() ([]byte, error)) error {
	data, err := encode()
	if err != nil {
		return fmt.Errorf("write keyfile %s: %w", path, err)
	}
	if err := atomicfile.Write(path, data, 0o600); err != nil {
		return fmt.Errorf("write keyfile: %w", err)
	}
	return nil
}

// ErrMalformedJoinToken is wrapped by ParseJoinToken when the text is not
// a join token.
var ErrMalformedJoinToken = errors.New("malformed join token")

// joinPrefix is a join token's: the shape of an enrollment token's, so
// that neither passes for the other.
const joinPrefix = "sj1"

// JoinString returns the token's text form as a join token,
// "sj1.<id>.<secret>", secret included: do not log it.
func (t Token) JoinString() string { return joinPrefix + "." + t.ID + "." + t.Secret }

// ParseJoinToken splits the text form of a join token into its id and
// secret, as ParseToken does; its errors wrap ErrMalformedJoinToken.
func ParseJoinToken(s string) (id, secret string, err error) {
	return parseToken(s, joinPrefix, ErrMalformedJoinToken)
}
