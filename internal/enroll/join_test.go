package enroll_test

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/enroll"
)

const testJoinToken = "sj1.0123456789abcdef.AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"

func validJoinKeyfile() enroll.JoinKeyfile {
	return enroll.JoinKeyfile{
		Version: 1,
		Role:    enroll.RoleEdge,
		Edges:   []string{"edge-a.example.com:5500", "[2001:db8::1]:5500"},
		CAPin:   testPin,
		Token:   testJoinToken,
		Expires: time.Date(2026, 11, 22, 4, 0, 0, 0, time.UTC),
	}
}

func TestJoinKeyfileRoundTrip(t *testing.T) {
	for _, role := range []enroll.Role{enroll.RoleEdge, enroll.RoleWitness} {
		kf := validJoinKeyfile()
		kf.Role = role
		data, err := kf.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(data, []byte(`"sallyport_join_keyfile": 1`)) || !bytes.Contains(data, []byte(`"role": "`+string(role)+`"`)) {
			t.Errorf("encoded %s", data)
		}
		back, err := enroll.DecodeJoinKeyfile(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(back, kf) {
			t.Errorf("round trip: got %+v, want %+v", back, kf)
		}
	}
}

// A keyfile of one kind given where the other is wanted is refused with
// a message that names what it is for, not a list of field problems.
func TestKeyfileKindsRefuseEachOther(t *testing.T) {
	joinData, err := validJoinKeyfile().Encode()
	if err != nil {
		t.Fatal(err)
	}
	connData, err := validKeyfile().Encode()
	if err != nil {
		t.Fatal(err)
	}
	_, err = enroll.DecodeKeyfile(bytes.NewReader(joinData))
	if !errors.Is(err, enroll.ErrBadKeyfile) || !strings.Contains(err.Error(), "this is a join keyfile") ||
		!strings.Contains(err.Error(), "sallyport token create") || strings.Contains(err.Error(), "unknown field") {
		t.Errorf("connector reading a join keyfile: %v", err)
	}
	_, err = enroll.DecodeJoinKeyfile(bytes.NewReader(connData))
	if !errors.Is(err, enroll.ErrBadKeyfile) || !strings.Contains(err.Error(), "this is a connector keyfile") ||
		!strings.Contains(err.Error(), "join-token") || strings.Contains(err.Error(), "unknown field") {
		t.Errorf("joiner reading a connector keyfile: %v", err)
	}
}

func TestJoinKeyfileProblems(t *testing.T) {
	tests := []struct {
		name string
		edit func(*enroll.JoinKeyfile)
		want string
	}{
		{"no role", func(k *enroll.JoinKeyfile) { k.Role = "" }, `role: "" is not a role`},
		{"bad role", func(k *enroll.JoinKeyfile) { k.Role = "connector" }, `"connector" is not a role`},
		{"websocket edge", func(k *enroll.JoinKeyfile) { k.Edges = []string{"wss://edge.example.com/.sallyport/tunnel"} }, "edges[0]"},
		{"no edges", func(k *enroll.JoinKeyfile) { k.Edges = nil }, "edges: missing; want at least one host:port address"},
		{"enrollment token", func(k *enroll.JoinKeyfile) { k.Token = testToken }, `does not start with "sj1."`},
		{"newer version", func(k *enroll.JoinKeyfile) { k.Version = 2 }, "upgrade sallyport"},
		{"no expiry", func(k *enroll.JoinKeyfile) { k.Expires = time.Time{} }, "expires: missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kf := validJoinKeyfile()
			tt.edit(&kf)
			if _, err := kf.Encode(); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Encode: %v; want it to say %q", err, tt.want)
			}
		})
	}
	// A connector keyfile never takes a join token either.
	kf := validKeyfile()
	kf.Token = testJoinToken
	if _, err := kf.Encode(); err == nil || !strings.Contains(err.Error(), `does not start with "sp1."`) {
		t.Errorf("connector keyfile with a join token: %v", err)
	}
}

// FuzzDecodeJoinKeyfile: no input panics DecodeJoinKeyfile, and a join
// keyfile it accepts encodes and decodes back to the same value.
func FuzzDecodeJoinKeyfile(f *testing.F) {
	good, err := validJoinKeyfile().Encode()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte(`{"sallyport_join_keyfile": 1, "role": "witness", "edges": ["[::1]:1"], "ca_pin": "` + testPin +
		`", "token": "` + testJoinToken + `", "expires": "2026-11-22T06:00:00.5+02:00"}`))
	f.Add([]byte(`{"sallyport_join_keyfile": 1, "sallyport_keyfile": 1}`))
	f.Add([]byte(`{"role": "edge", "role": "witness"}`))
	f.Add([]byte(``))
	f.Fuzz(func(t *testing.T, data []byte) {
		kf, err := enroll.DecodeJoinKeyfile(bytes.NewReader(data))
		if err != nil {
			return
		}
		out, err := kf.Encode()
		if err != nil {
			t.Fatalf("a decoded join keyfile does not encode: %v\n%+v", err, kf)
		}
		back, err := enroll.DecodeJoinKeyfile(bytes.NewReader(out))
		if err != nil {
			t.Fatalf("an encoded join keyfile does not decode: %v\n%s", err, out)
		}
		if !reflect.DeepEqual(back, kf) {
			t.Fatalf("round trip changed the join keyfile:\n%+v\n%+v", kf, back)
		}
	})
}
