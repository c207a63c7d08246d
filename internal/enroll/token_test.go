package enroll_test

import (
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/sallyport/sallyport/internal/enroll"
)

var tokenText = regexp.MustCompile(`^sp1\.[0-9a-f]{16}\.[A-Za-z0-9_-]{43}$`)

func TestNewToken(t *testing.T) {
	a, err := enroll.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	b, err := enroll.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	if !tokenText.MatchString(a.String()) {
		t.Fatalf("token %q does not have the sp1.<id>.<secret> form", a)
	}
	if a.ID == b.ID || a.Secret == b.Secret {
		t.Error("two new tokens share their id or secret")
	}
	id, secret, err := enroll.ParseToken(a.String())
	if err != nil {
		t.Fatalf("ParseToken of a new token: %v", err)
	}
	if id != a.ID || secret != a.Secret {
		t.Errorf("ParseToken = %q, %q; want %q, %q", id, secret, a.ID, a.Secret)
	}
}

func TestParseTokenRefusesMalformed(t *testing.T) {
	tok, err := enroll.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	good := tok.String()
	secret := tok.Secret
	cases := map[string]struct {
		text, says string
	}{
		"empty":             {"", "no dots"},
		"other scheme":      {"xx1." + tok.ID + "." + secret, `start with "sp1."`},
		"newer version":     {"sp2." + tok.ID + "." + secret, "upgrade"},
		"missing secret":    {"sp1." + tok.ID, "three parts"},
		"extra part":        {good + ".x", "three parts"},
		"short id":          {"sp1." + tok.ID[:15] + "." + secret, "16 lowercase hex"},
		"upper-case id":     {"sp1." + strings.ToUpper("abcdef0123456789") + "." + secret, "16 lowercase hex"},
		"short secret":      {good[:len(good)-1], "43"},
		"padded secret":     {good + "=", "43"},
		"standard base64":   {"sp1." + tok.ID + "." + "+" + secret[1:], "base64url"},
		"non-canonical end": {"sp1." + tok.ID + "." + secret[:42] + nonCanonical(secret[42]), "base64url"},
		"trailing newline":  {good + "\n", "characters"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			id, sec, err := enroll.ParseToken(tc.text)
			if !errors.Is(err, enroll.ErrMalformedToken) {
				t.Fatalf("ParseToken = %q, %q, %v; want ErrMalformedToken", id, sec, err)
			}
			if !strings.Contains(err.Error(), tc.says) {
				t.Errorf("error %q does not say %q", err, tc.says)
			}
			if strings.Contains(err.Error(), secret[:20]) {
				t.Errorf("error %q repeats the secret", err)
			}
		})
	}
}

// nonCanonical returns another base64url character that decodes to the
// same last byte as c (the last of 43 characters carries 2 unused bits).
func nonCanonical(c byte) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	i := strings.IndexByte(alphabet, c)
	return string(alphabet[i^1])
}

func TestSecretMatches(t *testing.T) {
	tok, err := enroll.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	other, err := enroll.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	hash := enroll.HashSecret(tok.Secret)
	if len(hash) != 32 {
		t.Fatalf("hash has %d bytes, want 32", len(hash))
	}
	if strings.Contains(string(hash), tok.Secret) {
		t.Fatal("the hash holds the secret")
	}
	if !enroll.SecretMatches(hash, tok.Secret) {
		t.Error("the secret does not match its own hash")
	}
	if enroll.SecretMatches(hash, other.Secret) {
		t.Error("another secret matches")
	}
	if enroll.SecretMatches(hash[:16], tok.Secret) || enroll.SecretMatches(nil, tok.Secret) {
		t.Error("a truncated or empty hash matches")
	}
}
