// Package enroll holds what a connector needs to join an edge: the
// one-time enrollment token and the keyfile that carries it.
//
// The edge makes a token with NewToken, stores only HashSecret(tok.Secret)
// under tok.ID, and hands the operator a keyfile:
//
//	tok, err := enroll.NewToken()
//	kf := enroll.Keyfile{Name: "site-a", Edges: []string{"edge.example.com:5500"},
//		CAPin: ca.Pin(), Token: tok.String(), Expires: now.Add(24 * time.Hour)}
//	err = enroll.WriteKeyfile("site-a.keyfile", kf)
//
// The connector reads it with ReadKeyfile, and redeems the token; the edge
// splits the presented token with ParseToken, looks the hash up by id and
// checks it with SecretMatches.
//
// Everything here is pure data and safe for concurrent use.
package enroll

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

const (
	// tokenPrefix is the token format's name and version.
	tokenPrefix = "sp1"
	// sessionPrefix is a session token's: the same shape as an
	// enrollment token's, so that neither passes for the other.
	sessionPrefix = "ss1"
	// tokenIDBytes and tokenSecretBytes are the random bytes in a token's
	// id and secret.
	tokenIDBytes     = 8
	tokenSecretBytes = 32
)

// secretEncoding returns base64url without padding, rejecting
// non-canonical text so that a token has exactly one spelling.
func secretEncoding() *base64.Encoding { return base64.RawURLEncoding.Strict() }

// ErrMalformedToken is wrapped by ParseToken when the text is not a token.
var ErrMalformedToken = errors.New("malformed enrollment token")

// ErrMalformedSession is wrapped by ParseSessionToken when the text is not
// a session token.
var ErrMalformedSession = errors.New("malformed session token")

// Token is a one-time enrollment token: a public ID, under which the edge
// stores the secret's hash, and the Secret itself. Its text form is
// "sp1.<id>.<secret>": the id is 16 lowercase hex digits (8 random bytes),
// the secret 43 base64url characters (32 random bytes). The zero Token is
// not valid.
type Token struct {
	ID     string
	Secret string
}

// NewToken makes a token from fresh random bytes.
func NewToken() (Token, error) {
	id := make([]byte, tokenIDBytes)
	secret := make([]byte, tokenSecretBytes)
	if _, err := rand.Read(id); err != nil {
		return Token{}, fmt.Errorf("new enrollment token: %w", err)
	}
	if _, err := rand.Read(secret); err != nil {
		return Token{}, fmt.Errorf("new enrollment token: %w", err)
	}
	return Token{ID: hex.EncodeToString(id), Secret: secretEncoding().EncodeToString(secret)}, nil
}

// String returns the token's text form, secret included: do not log it.
func (t Token) String() string { return tokenPrefix + "." + t.ID + "." + t.Secret }

// SessionString returns the token's text form as a session token,
// "ss1.<id>.<secret>", secret included: do not log it. A session token is
// made by NewToken like an enrollment token; only its prefix differs.
func (t Token) SessionString() string { return sessionPrefix + "." + t.ID + "." + t.Secret }

// ParseToken splits the text form of a token into its id and secret. Its
// errors wrap ErrMalformedToken, say what is wrong and never repeat the
// secret.
func ParseToken(s string) (id, secret string, err error) {
	return parseToken(s, tokenPrefix, ErrMalformedToken)
}

// ParseSessionToken splits the text form of a session token
// ("ss1.<id>.<secret>") into its id and secret, as ParseToken does; its
// errors wrap ErrMalformedSession.
func ParseSessionToken(s string) (id, secret string, err error) {
	return parseToken(s, sessionPrefix, ErrMalformedSession)
}

// parseToken splits s, a token of the format prefix names; its errors
// wrap malformed.
func parseToken(s, prefix string, malformed error) (id, secret string, err error) {
	want := "want " + prefix + ".<16 hex digits>.<43 base64url characters>: copy the whole token"
	version, rest, ok := strings.Cut(s, ".")
	if !ok {
		return "", "", fmt.Errorf("%w: no dots in it; %s", malformed, want)
	}
	if version != prefix {
		if len(version) <= 4 && strings.HasPrefix(version, prefix[:2]) {
			return "", "", fmt.Errorf("%w: token version %q is not supported by this sallyport, which knows %q: upgrade it",
				malformed, version, prefix)
		}
		return "", "", fmt.Errorf("%w: it does not start with %q; %s", malformed, prefix+".", want)
	}
	id, secret, ok = strings.Cut(rest, ".")
	if !ok || strings.Contains(secret, ".") {
		return "", "", fmt.Errorf("%w: want exactly three parts separated by dots; %s", malformed, want)
	}
	if len(id) != 2*tokenIDBytes || !isLowerHex(id) {
		return "", "", fmt.Errorf("%w: the id is not %d lowercase hex digits; %s", malformed, 2*tokenIDBytes, want)
	}
	if n := secretEncoding().EncodedLen(tokenSecretBytes); len(secret) != n {
		return "", "", fmt.Errorf("%w: the secret has %d characters, want %d; %s", malformed, len(secret), n, want)
	}
	if _, err := secretEncoding().DecodeString(secret); err != nil {
		return "", "", fmt.Errorf("%w: the secret is not base64url without padding; %s", malformed, want)
	}
	return id, secret, nil
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// HashSecret returns the SHA-256 of a token's secret text: what the edge
// stores instead of the secret. The secret has 256 random bits, so a plain
// hash suffices (no salt or slow hash is needed against guessing).
func HashSecret(secret string) []byte {
	sum := sha256.Sum256([]byte(secret))
	return sum[:]
}

// SecretMatches reports whether secret hashes to hash, in time that does not
// depend on where they differ.
func SecretMatches(hash []byte, secret string) bool {
	return subtle.ConstantTimeCompare(hash, HashSecret(secret)) == 1
}
