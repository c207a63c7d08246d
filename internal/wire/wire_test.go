package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestPreambleRoundTrip(t *testing.T) {
	for _, v := range []uint16{Version, 0, 2, 0xffff} {
		var buf bytes.Buffer
		if err := WritePreamble(&buf, v); err != nil {
			t.Fatal(err)
		}
		want := append([]byte("SALLYPRT"), byte(v>>8), byte(v))
		if !bytes.Equal(buf.Bytes(), want) {
			t.Fatalf("preamble for version %d = %q, want %q", v, buf.Bytes(), want)
		}
		if err := ReadPreamble(&buf, v); err != nil {
			t.Fatalf("version %d: %v", v, err)
		}
	}
}

func TestReadPreambleRejects(t *testing.T) {
	for _, tc := range []struct {
		name  string
		in    string
		is    error
		inMsg string
	}{
		{"http request", "GET / HTTP/1.1\r\n", ErrMalformed, "not a sallyport tunnel endpoint"},
		{"lower-case magic", "sallyprt\x00\x01", ErrMalformed, "not a sallyport tunnel endpoint"},
		{"tls client hello", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03", ErrMalformed, "not a sallyport tunnel endpoint"},
		{"empty", "", io.EOF, "read preamble"},
		{"short", "SALLYPRT\x00", io.ErrUnexpectedEOF, "read preamble"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ReadPreamble(strings.NewReader(tc.in), Version)
			if !errors.Is(err, tc.is) {
				t.Fatalf("ReadPreamble(%q) = %v, want %v", tc.in, err, tc.is)
			}
			if !strings.Contains(err.Error(), tc.inMsg) {
				t.Fatalf("error %q does not say %q", err, tc.inMsg)
			}
		})
	}
}

func TestReadPreambleOtherVersion(t *testing.T) {
	var buf bytes.Buffer
	WritePreamble(&buf, 7)
	err := ReadPreamble(&buf, Version)
	var ve *VersionError
	if !errors.As(err, &ve) {
		t.Fatalf("ReadPreamble = %v, want a *VersionError", err)
	}
	if ve.Local != Version || ve.Remote != 7 {
		t.Fatalf("VersionError = %+v, want local %d remote 7", ve, Version)
	}
	if errors.Is(err, ErrMalformed) {
		t.Fatal("a version mismatch must not be reported as malformed input")
	}
	msg := err.Error()
	for _, s := range []string{"peer speaks version 7", "this build speaks version " + strconv.Itoa(int(Version)), "same sallyport release"} {
		if !strings.Contains(msg, s) {
			t.Errorf("error %q does not say %q", msg, s)
		}
	}
}

// Version 3 moved resets, pings and the goodbye from the control stream
// into the multiplexer's frames: a version 2 peer would take a reset for
// a half-close, and wait for a control stream that never comes; it is
// refused by version, in words, at the preamble.
func TestVersion3RefusesVersion2(t *testing.T) {
	if Version != 3 {
		t.Fatalf("Version = %d; a change of the protocol's meaning bumps it, and this test with it", Version)
	}
	var buf bytes.Buffer
	WritePreamble(&buf, Version)
	if want := "SALLYPRT\x00\x03"; buf.String() != want {
		t.Fatalf("preamble %q, want %q", buf.String(), want)
	}
	err := ReadPreamble(strings.NewReader("SALLYPRT\x00\x02"), Version)
	var ve *VersionError
	if !errors.As(err, &ve) || *ve != (VersionError{Local: 3, Remote: 2}) {
		t.Fatalf("a version 2 preamble: %v; want a VersionError local 3, remote 2", err)
	}
	if want := "peer speaks version 2, this build speaks version 3; run the same sallyport release on edge and connector"; !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not say %q", err, want)
	}
}

// messages holds one filled-in value for every message kind.
func messages() []struct {
	kind Kind
	v    any
} {
	return []struct {
		kind Kind
		v    any
	}{
		{KindHello, &Hello{Instance: "c-1f2e", Services: []string{"db", "ssh", "wiki"}}},
		{KindWelcome, &Welcome{EdgeID: "edge-a", Edges: []string{"edge-a:5500", "[2001:db8::1]:5500"}}},
		{KindRefusal, &Refusal{Code: CodeRevoked, Reason: "connector \"site-a\" was revoked"}},
		{KindEnrollRequest, &EnrollRequest{Token: "sp1.abc.def", CSR: []byte{0x30, 0x82, 0x01, 0x00, 0xff}}},
		{KindEnrollResponse, &EnrollResponse{Certificate: []byte{1, 2, 3}, CA: []byte{4, 5, 6}, ConnectorID: "site-a", Edges: []string{"e:1"}}},
		{KindRenewRequest, &RenewRequest{CSR: []byte{0x30, 0x82, 0x01, 0x00, 0xfe}}},
		{KindRenewResponse, &RenewResponse{Certificate: []byte{7, 8, 9}}},
		{KindJoinRequest, &JoinRequest{Token: "sj1.abc.def", CSR: []byte{0x30, 0x82, 0x01}, Name: "sallyport-edge-1a2b3c4d", Advertise: "edge-b:6222"}},
		{KindJoinResponse, &JoinResponse{CA: []byte{1, 2}, CAKey: []byte{3, 4}, Certificate: []byte{5, 6}, Routes: []string{"edge-a:6222"}}},
		{KindTimeRequest, &TimeRequest{}},
		{KindTimeResponse, &TimeResponse{Time: time.Date(2026, 11, 26, 8, 5, 0, 123456789, time.UTC)}},
	}
}

func TestMessageRoundTrip(t *testing.T) {
	for _, m := range messages() {
		t.Run(m.kind.String(), func(t *testing.T) {
			var buf bytes.Buffer
			if err := WriteMessage(&buf, m.kind, m.v); err != nil {
				t.Fatal(err)
			}
			if buf.Bytes()[0] != byte(m.kind) || int(binary.BigEndian.Uint32(buf.Bytes()[1:5])) != buf.Len()-5 {
				t.Fatalf("header % x does not frame a %d-byte body", buf.Bytes()[:5], buf.Len()-5)
			}
			kind, body, err := ReadMessage(bytes.NewReader(buf.Bytes()))
			if err != nil || kind != m.kind {
				t.Fatalf("ReadMessage = %v, %v", kind, err)
			}
			got := reflect.New(reflect.TypeOf(m.v).Elem()).Interface()
			if err := Decode(kind, body, got); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, m.v) {
				t.Fatalf("round trip: got %+v, want %+v", got, m.v)
			}
			if m.kind == KindRefusal {
				return // ReadExpect returns a Refusal as an error; see TestReadExpect.
			}
			got = reflect.New(reflect.TypeOf(m.v).Elem()).Interface()
			if err := ReadExpect(&buf, m.kind, got); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, m.v) {
				t.Fatalf("ReadExpect: got %+v, want %+v", got, m.v)
			}
		})
	}
}

func TestKindAndCodeNames(t *testing.T) {
	seen := map[string]bool{}
	for k := KindHello; k < kindLimit; k++ {
		s := k.String()
		if strings.HasPrefix(s, "kind(") || seen[s] {
			t.Errorf("kind %d has no name of its own: %q", k, s)
		}
		seen[s] = true
	}
	if s := kindLimit.String(); s != fmt.Sprintf("kind(%d)", kindLimit) {
		t.Errorf("kindLimit = %q", s)
	}
	for c := CodeOK; c < codeLimit; c++ {
		s := c.String()
		if strings.HasPrefix(s, "code(") || seen[s] {
			t.Errorf("code %d has no name of its own: %q", c, s)
		}
		seen[s] = true
	}
	if s := codeLimit.String(); !strings.HasPrefix(s, "code(") {
		t.Errorf("codeLimit = %q", s)
	}
}

// header builds a message header with an arbitrary kind byte and length.
func header(kind byte, n uint32) []byte {
	h := []byte{kind, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(h[1:], n)
	return h
}

func TestReadMessageRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
		is   error
	}{
		{"kind 0", append(header(0, 2), "{}"...), ErrMalformed},
		{"kind after the last", append(header(byte(kindLimit), 2), "{}"...), ErrMalformed},
		{"kind 255", append(header(255, 2), "{}"...), ErrMalformed},
		{"one byte over the limit", header(byte(KindHello), MaxMessage+1), ErrMalformed},
		{"4 GiB", header(byte(KindHello), 0xffffffff), ErrMalformed},
		{"empty", nil, io.EOF},
		{"truncated header", header(byte(KindHello), 2)[:3], io.ErrUnexpectedEOF},
		{"truncated body", append(header(byte(KindHello), 10), `{"a":`...), io.ErrUnexpectedEOF},
		{"missing body", header(byte(KindWelcome), 10), io.EOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := ReadMessage(bytes.NewReader(tc.in))
			if !errors.Is(err, tc.is) {
				t.Fatalf("ReadMessage = %v, want %v", err, tc.is)
			}
		})
	}
}

func TestReadMessageAcceptsTheLimit(t *testing.T) {
	in := append(header(byte(KindHello), MaxMessage), bytes.Repeat([]byte(" "), MaxMessage)...)
	_, body, err := ReadMessage(bytes.NewReader(in))
	if err != nil || len(body) != MaxMessage {
		t.Fatalf("ReadMessage of exactly MaxMessage bytes = %d bytes, %v", len(body), err)
	}
}

// A length header is checked before the body is allocated: a peer that
// claims 4 GiB costs the reader nothing.
func TestReadMessageDoesNotAllocateAClaimedLength(t *testing.T) {
	in := header(byte(KindEnrollRequest), 0xffffffff)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range 10 {
		if _, _, err := ReadMessage(bytes.NewReader(in)); !errors.Is(err, ErrMalformed) {
			t.Fatalf("ReadMessage = %v", err)
		}
	}
	runtime.ReadMemStats(&after)
	if n := after.TotalAlloc - before.TotalAlloc; n > 64<<10 {
		t.Fatalf("10 rejected 4 GiB headers allocated %d bytes", n)
	}
}

func TestWriteMessageRefusesOversizeBody(t *testing.T) {
	var buf bytes.Buffer
	big := Hello{Services: make([]string, MaxMessage/3)}
	err := WriteMessage(&buf, KindHello, big)
	if err == nil || !strings.Contains(err.Error(), "exceed") {
		t.Fatalf("WriteMessage of an oversize hello = %v", err)
	}
	if buf.Len() != 0 {
		t.Fatalf("an oversize message wrote %d bytes", buf.Len())
	}
}

func TestDecodeRejects(t *testing.T) {
	for _, tc := range []struct {
		name, body string
	}{
		{"unknown field", `{"instance":"a","services":[],"admin":true}`},
		{"wrong type", `{"instance":1}`},
		{"not json", `hello`},
		{"empty", ``},
		{"second object", `{"instance":"a"} {"instance":"b"}`},
		{"trailing word", `{"instance":"a"} x`},
		{"trailing brace", `{"instance":"a"}}`},
		{"trailing bracket", `{"instance":"a"}]`},
		{"truncated", `{"instance":"a"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h Hello
			err := Decode(KindHello, []byte(tc.body), &h)
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Decode(%q) = %v, want ErrMalformed", tc.body, err)
			}
			if !strings.Contains(err.Error(), "hello") {
				t.Fatalf("error %q does not name the message", err)
			}
		})
	}
	var h Hello
	if err := Decode(KindHello, []byte(" {\"instance\":\"a\"}\n"), &h); err != nil || h.Instance != "a" {
		t.Fatalf("Decode with surrounding white space = %+v, %v", h, err)
	}
}

func TestReadExpect(t *testing.T) {
	msg := func(kind Kind, v any) *bytes.Buffer {
		var buf bytes.Buffer
		if err := WriteMessage(&buf, kind, v); err != nil {
			t.Fatal(err)
		}
		return &buf
	}
	raw := func(kind Kind, body string) *bytes.Buffer {
		return bytes.NewBuffer(append(header(byte(kind), uint32(len(body))), body...))
	}

	t.Run("refusal", func(t *testing.T) {
		var w Welcome
		err := ReadExpect(msg(KindRefusal, Refusal{Code: CodeTokenUsed, Reason: "token already redeemed; ask for a new keyfile"}), KindWelcome, &w)
		var ref *Refusal
		if !errors.As(err, &ref) {
			t.Fatalf("ReadExpect = %v, want a *Refusal", err)
		}
		if ref.Code != CodeTokenUsed || ref.Reason != "token already redeemed; ask for a new keyfile" {
			t.Fatalf("refusal = %+v", ref)
		}
		if want := "refused (token used): token already redeemed; ask for a new keyfile"; err.Error() != want {
			t.Fatalf("error text %q, want %q", err, want)
		}
	})
	for _, code := range []int{int(codeLimit), 200, 255} {
		t.Run("refusal with bad code", func(t *testing.T) {
			var w Welcome
			err := ReadExpect(raw(KindRefusal, `{"code":`+strconv.Itoa(code)+`,"reason":"x"}`), KindWelcome, &w)
			var ref *Refusal
			if !errors.Is(err, ErrMalformed) || errors.As(err, &ref) {
				t.Fatalf("ReadExpect with code %d = %v, want ErrMalformed and no refusal", code, err)
			}
		})
	}
	t.Run("refusal with unknown field", func(t *testing.T) {
		var w Welcome
		err := ReadExpect(raw(KindRefusal, `{"code":1,"reason":"x","retry":true}`), KindWelcome, &w)
		if !errors.Is(err, ErrMalformed) {
			t.Fatalf("ReadExpect = %v, want ErrMalformed", err)
		}
	})
	t.Run("other kind", func(t *testing.T) {
		var r EnrollResponse
		err := ReadExpect(msg(KindWelcome, Welcome{EdgeID: "e"}), KindEnrollResponse, &r)
		if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "expected enroll response, got welcome") {
			t.Fatalf("ReadExpect = %v", err)
		}
	})
	t.Run("bad body", func(t *testing.T) {
		var w Welcome
		err := ReadExpect(raw(KindWelcome, `{"edge_id":"e","cluster":"x"}`), KindWelcome, &w)
		if !errors.Is(err, ErrMalformed) {
			t.Fatalf("ReadExpect = %v, want ErrMalformed", err)
		}
	})
	t.Run("truncated", func(t *testing.T) {
		var w Welcome
		err := ReadExpect(bytes.NewBuffer(header(byte(KindWelcome), 40)), KindWelcome, &w)
		if !errors.Is(err, io.EOF) {
			t.Fatalf("ReadExpect = %v, want EOF", err)
		}
	})
}
