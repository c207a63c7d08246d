package enroll_test

import (
	"bytes"
	"reflect"
	"strings"
	"testing"

	"github.com/sallyport/sallyport/internal/enroll"
)

// FuzzDecodeKeyfile: no input panics DecodeKeyfile, and a keyfile it accepts
// encodes and decodes back to the same value.
func FuzzDecodeKeyfile(f *testing.F) {
	good, err := validKeyfile().Encode()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte(`{"sallyport_keyfile": 1, "name": "site-a", "edges": ["edge.example.com:5500"], "ca_pin": "` + testPin +
		`", "token": "` + testToken + `", "expires": "2026-11-22T06:00:00.123456789+02:00"}`))
	f.Add([]byte(`{"sallyport_keyfile": 1, "name": "x", "edges": ["[::1]:1"], "ca_pin": "sha256:` + strings.ToUpper(testPin[7:]) +
		`", "token": "` + testToken + `", "expires": "0000-01-01T00:30:00+01:00"}`))
	f.Add([]byte(`{"name": "site-a", "name": "site-b", "Edges": null}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(``))
	f.Fuzz(func(t *testing.T, data []byte) {
		kf, err := enroll.DecodeKeyfile(bytes.NewReader(data))
		if err != nil {
			return
		}
		out, err := kf.Encode()
		if err != nil {
			t.Fatalf("a decoded keyfile does not encode: %v\n%+v", err, kf)
		}
		back, err := enroll.DecodeKeyfile(bytes.NewReader(out))
		if err != nil {
			t.Fatalf("an encoded keyfile does not decode: %v\n%s", err, out)
		}
		if !reflect.DeepEqual(back, kf) {
			t.Fatalf("round trip changed the keyfile:\n%+v\n%+v", kf, back)
		}
	})
}

// FuzzParseToken: no input panics ParseToken, and a token it accepts has
// exactly one spelling.
func FuzzParseToken(f *testing.F) {
	f.Add(testToken)
	f.Add("sp1.0123456789abcdef.AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh9")
	f.Add("sp1..")
	f.Add("sp2.0123456789abcdef.x")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		id, secret, err := enroll.ParseToken(s)
		if err != nil {
			return
		}
		if got := (enroll.Token{ID: id, Secret: secret}).String(); got != s {
			t.Fatalf("ParseToken(%q) gave parts that spell %q", s, got)
		}
		if hash := enroll.HashSecret(secret); !enroll.SecretMatches(hash, secret) {
			t.Fatalf("secret %q does not match its hash", secret)
		}
	})
}
