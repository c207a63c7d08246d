package enroll_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/enroll"
	"github.com/sallyport/sallyport/internal/pki"
)

// Fixed, well-formed values for keyfiles in tests.
const (
	testPin   = "sha256:3f2a0c1d9e8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a29"
	testToken = "sp1.0123456789abcdef.AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"
)

func validKeyfile() enroll.Keyfile {
	return enroll.Keyfile{
		Version: 1,
		Name:    "site-a",
		Edges:   []string{"edge.example.com:5500", "[2001:db8::1]:5500"},
		CAPin:   testPin,
		Token:   testToken,
		Expires: time.Date(2026, 11, 22, 4, 0, 0, 0, time.UTC),
	}
}

func TestKeyfileRoundTrip(t *testing.T) {
	kf := validKeyfile()
	data, err := kf.Encode()
	if err != nil {
		t.Fatal(err)
	}
	var fields map[string]any
	if err := json.Unmarshal(data, &fields); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k := range fields {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if want := []string{"ca_pin", "edges", "expires", "name", "sallyport_keyfile", "token"}; !slices.Equal(keys, want) {
		t.Errorf("keyfile fields %v, want %v", keys, want)
	}
	if fields["expires"] != "2026-11-22T04:00:00Z" || fields["sallyport_keyfile"] != 1.0 {
		t.Errorf("encoded %s", data)
	}
	back, err := enroll.DecodeKeyfile(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, kf) {
		t.Errorf("decoded %+v, want %+v", back, kf)
	}
}

func TestDecodeKeyfileAsDocumented(t *testing.T) {
	doc := `{"sallyport_keyfile": 1, "name": "site-a", "edges": ["edge.example.com:5500"], "ca_pin": "` + testPin +
		`", "token": "` + testToken + `", "expires": "2026-11-22T06:00:00+02:00"}`
	kf, err := enroll.DecodeKeyfile(strings.NewReader(doc))
	if err != nil {
		t.Fatal(err)
	}
	if kf.Name != "site-a" || len(kf.Edges) != 1 || kf.CAPin != testPin || kf.Token != testToken {
		t.Errorf("decoded %+v", kf)
	}
	if want := time.Date(2026, 11, 22, 4, 0, 0, 0, time.UTC); kf.Expires != want {
		t.Errorf("expires %v, want %v in UTC", kf.Expires, want)
	}
	if !kf.Expired(kf.Expires) || kf.Expired(kf.Expires.Add(-time.Second)) {
		t.Error("Expired is wrong at the boundary")
	}
}

func TestDecodeKeyfileRefuses(t *testing.T) {
	good, err := validKeyfile().Encode()
	if err != nil {
		t.Fatal(err)
	}
	withField := func(extra string) string {
		return strings.Replace(string(good), "{", "{"+extra+",", 1)
	}
	cases := map[string]struct {
		doc  string
		says []string
	}{
		"not JSON":        {"hello", []string{"not a JSON object"}},
		"a list":          {"[1]", []string{"not a JSON object"}},
		"empty object":    {"{}", []string{"sallyport_keyfile: missing", "name: missing", "edges: missing", "ca_pin", "token", "expires: missing"}},
		"unknown field":   {withField(`"comment": "x"`), []string{`"comment": unknown field`}},
		"repeated field":  {withField(`"name": "site-b"`), []string{"name: given more than once"}},
		"other case":      {withField(`"Name": "site-b"`), []string{`"Name": unknown field`}},
		"trailing data":   {string(good) + "{}", []string{"after the JSON object"}},
		"truncated":       {string(good[:len(good)-3]), []string{"invalid JSON"}},
		"newer version":   {strings.Replace(withField(`"relay": "x"`), `"sallyport_keyfile": 1`, `"sallyport_keyfile": 2`, 1), []string{"bad keyfile: sallyport_keyfile: version 2 is newer than this sallyport reads (1): upgrade sallyport"}},
		"version as text": {strings.Replace(string(good), `"sallyport_keyfile": 1`, `"sallyport_keyfile": "1"`, 1), []string{"want a version number"}},
		"edges as text":   {strings.Replace(string(good), `"edges": [`, `"edges": "x", "x": [`, 1), []string{`want a list of "host:port"`}},
		"bad expires":     {strings.Replace(string(good), "2026-11-22T04:00:00Z", "tomorrow", 1), []string{"expires: want an RFC 3339 time"}},
		"too large":       {withField(`"pad": "` + strings.Repeat("x", enroll.MaxKeyfileSize) + `"`), []string{"larger than 64 KiB"}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			kf, err := enroll.DecodeKeyfile(strings.NewReader(tc.doc))
			if !errors.Is(err, enroll.ErrBadKeyfile) {
				t.Fatalf("DecodeKeyfile = %+v, %v; want ErrBadKeyfile", kf, err)
			}
			for _, s := range tc.says {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not say %q", err, s)
				}
			}
		})
	}
}

// TestKeyfileReportsEveryProblem: an operator fixing a keyfile by hand sees
// all its problems at once, and each can be told apart by errors.Is.
func TestKeyfileReportsEveryProblem(t *testing.T) {
	kf := validKeyfile()
	kf.Name = "site a"
	kf.Edges = []string{"edge.example.com", "edge.example.com:0", "edge.example.com:5500", "bad host:1",
		"wss://edge.example.com/.sallyport/tunnel", "ws://edge.example.com/.sallyport/tunnel"}
	kf.CAPin = "sha1:abc"
	kf.Token = "sp1.nothex"
	kf.Expires = time.Time{}
	_, err := kf.Encode()
	var ke *enroll.KeyfileError
	if !errors.As(err, &ke) {
		t.Fatalf("Encode = %v, want a *KeyfileError", err)
	}
	if len(ke.Problems) != 8 {
		t.Errorf("%d problems reported, want 8:\n%v", len(ke.Problems), err)
	}
	for _, s := range []string{"name:", "edges[0]:", "edges[1]:", "edges[3]:", "edges[5]:", "ca_pin:", "token:", "expires: missing"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error does not mention %q:\n%v", s, err)
		}
	}
	if strings.Contains(err.Error(), "edges[2]") || strings.Contains(err.Error(), "edges[4]") {
		t.Errorf("a good edge was reported:\n%v", err)
	}
	if !errors.Is(err, pki.ErrBadPin) || !errors.Is(err, enroll.ErrMalformedToken) {
		t.Errorf("the pin and token problems cannot be told apart with errors.Is: %v", err)
	}
}

func TestValidateName(t *testing.T) {
	for _, good := range []string{"site-a", "a", "site_1.dc2", strings.Repeat("x", 63)} {
		if err := enroll.ValidateName(good); err != nil {
			t.Errorf("ValidateName(%q) = %v", good, err)
		}
	}
	for _, bad := range []string{"", "-site", ".site", "site a", "site/a", "sité", "a\n", "Site-A", strings.Repeat("x", 64)} {
		if err := enroll.ValidateName(bad); err == nil {
			t.Errorf("ValidateName(%q) accepted it", bad)
		}
	}
}

func TestWriteReadKeyfile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "site-a.keyfile")
	// An older, world-readable file at the path is replaced by a 0600 one.
	if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	kf := validKeyfile()
	if err := enroll.WriteKeyfile(path, kf); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("keyfile mode %v, want 0600", fi.Mode().Perm())
	}
	back, err := enroll.ReadKeyfile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, kf) {
		t.Errorf("read %+v, want %+v", back, kf)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("the directory holds %d entries after writing, want just the keyfile", len(entries))
	}

	bad := validKeyfile()
	bad.Edges = nil
	if err := enroll.WriteKeyfile(path, bad); !errors.Is(err, enroll.ErrBadKeyfile) {
		t.Errorf("WriteKeyfile of an invalid keyfile = %v, want ErrBadKeyfile", err)
	}
	if again, err := enroll.ReadKeyfile(path); err != nil || !reflect.DeepEqual(again, kf) {
		t.Errorf("a refused write changed the keyfile on disk: %v", err)
	}

	if err := os.WriteFile(path, []byte(`{"name": 1}`), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = enroll.ReadKeyfile(path)
	if !errors.Is(err, enroll.ErrBadKeyfile) || !strings.Contains(err.Error(), path) {
		t.Errorf("ReadKeyfile of a damaged file = %v, want ErrBadKeyfile naming %s", err, path)
	}
	missing := filepath.Join(dir, "nope.keyfile")
	_, err = enroll.ReadKeyfile(missing)
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), missing) {
		t.Errorf("ReadKeyfile of a missing file = %v, want ErrNotExist naming it", err)
	}
}
