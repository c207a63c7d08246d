package wire

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestStreamOpenRoundTrip(t *testing.T) {
	for _, h := range []StreamOpen{
		{Service: "db", Client: "203.0.113.9:51234"},
		{Service: "s", Client: ""},
		{Service: strings.Repeat("a", MaxServiceName), Client: strings.Repeat("c", MaxClientAddr)},
		{Service: "wiki", Client: "[2001:db8::1]:443"},
		{Client: "198.18.0.7:4000", Address: "db.internal:5432"},
		{Client: "198.18.0.7:4000", Address: strings.Repeat("h", MaxAddress)},
	} {
		b, err := AppendStreamOpen([]byte("prefix"), h)
		if err != nil {
			t.Fatalf("AppendStreamOpen(%+v): %v", h, err)
		}
		if !bytes.HasPrefix(b, []byte("prefix")) {
			t.Fatalf("AppendStreamOpen lost what b held: %q", b)
		}
		// The client's first bytes follow the header on the stream: the
		// reader must leave them where they are.
		r := bytes.NewReader(append(b[len("prefix"):], "PING"...))
		got, err := ReadStreamOpen(r)
		if err != nil || got != h {
			t.Fatalf("ReadStreamOpen = %+v, %v; want %+v", got, err, h)
		}
		if rest, _ := io.ReadAll(r); string(rest) != "PING" {
			t.Fatalf("bytes after the header: %q, want PING", rest)
		}
	}
}

// A header that names an address is a lookup, whichever side reads it.
func TestStreamOpenLookup(t *testing.T) {
	for _, tc := range []struct {
		h      StreamOpen
		lookup bool
	}{
		{StreamOpen{Service: "db", Client: "203.0.113.9:51234"}, false},
		{StreamOpen{Client: "198.18.0.7:4000", Address: "db.internal:5432"}, true},
		{StreamOpen{Address: "[2001:db8::1]:22"}, true},
	} {
		b, err := AppendStreamOpen(nil, tc.h)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ReadStreamOpen(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		if tc.h.Lookup() != tc.lookup || got.Lookup() != tc.lookup {
			t.Errorf("%+v: Lookup() = %v, read back %v; want %v", tc.h, tc.h.Lookup(), got.Lookup(), tc.lookup)
		}
	}
}

func TestAppendStreamOpenBounds(t *testing.T) {
	for _, h := range []StreamOpen{
		{Service: "", Client: "1.2.3.4:5"},
		{Service: strings.Repeat("a", MaxServiceName+1), Client: "1.2.3.4:5"},
		{Service: "db", Client: strings.Repeat("c", MaxClientAddr+1)},
		{Service: "db", Client: "1.2.3.4:5", Address: "10.0.0.1:22"}, // both
		{Client: "1.2.3.4:5", Address: strings.Repeat("h", MaxAddress+1)},
	} {
		b, err := AppendStreamOpen([]byte("x"), h)
		if err == nil {
			t.Errorf("AppendStreamOpen(service %d bytes, client %d bytes) succeeded", len(h.Service), len(h.Client))
		}
		if string(b) != "x" {
			t.Errorf("a refused header changed b to %q", b)
		}
	}
}

func TestReadStreamOpenRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
		is   error
	}{
		{"neither service nor address", []byte{0, 3, 'a', 'b', 'c', 0}, ErrMalformed},
		{"both service and address", []byte{2, 'd', 'b', 0, 2, 'h', ':'}, ErrMalformed},
		{"no address length", []byte{0, 3, 'a', 'b', 'c'}, io.ErrUnexpectedEOF},
		{"truncated address", []byte{0, 0, 4, 'h', ':'}, io.ErrUnexpectedEOF},
		{"service of 64 bytes", append([]byte{64}, bytes.Repeat([]byte("a"), 80)...), ErrMalformed},
		{"service of 255 bytes", append([]byte{255}, bytes.Repeat([]byte("a"), 300)...), ErrMalformed},
		{"nothing", nil, io.EOF},
		{"truncated service", []byte{5, 'a', 'b'}, io.ErrUnexpectedEOF},
		{"no client length", []byte{2, 'd', 'b'}, io.ErrUnexpectedEOF},
		{"truncated client", []byte{2, 'd', 'b', 9, '1', '.'}, io.ErrUnexpectedEOF},
		{"missing client", []byte{2, 'd', 'b', 9}, io.ErrUnexpectedEOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadStreamOpen(bytes.NewReader(tc.in))
			if !errors.Is(err, tc.is) {
				t.Fatalf("ReadStreamOpen(% x) = %v, want %v", tc.in, err, tc.is)
			}
		})
	}
}

func TestStreamReplyRoundTrip(t *testing.T) {
	for _, r := range []StreamReply{
		{Code: CodeOK},
		{Code: CodeOK, Service: "db"},
		{Code: CodeOK, Service: strings.Repeat("s", MaxServiceName)},
		{Code: CodeUnknownService, Reason: `service "db" is not offered by this connector`},
		{Code: CodeInternal, Reason: strings.Repeat("r", MaxReason)},
		{Code: codeLimit - 1, Reason: "last code"},
	} {
		b, err := AppendStreamReply([]byte("p"), r)
		if err != nil {
			t.Fatalf("AppendStreamReply(%+v): %v", r, err)
		}
		rd := bytes.NewReader(append(b[1:], "DATA"...))
		got, err := ReadStreamReply(rd)
		if err != nil || got != r {
			t.Fatalf("ReadStreamReply = %+v, %v; want %+v", got, err, r)
		}
		if rest, _ := io.ReadAll(rd); string(rest) != "DATA" {
			t.Fatalf("bytes after the reply: %q, want DATA", rest)
		}
	}
}

// The reply's one text field is the service in an acceptance and the
// reason in a refusal: a reply that would read back as something else is
// not encoded.
func TestAppendStreamReplyRefusesAmbiguousReplies(t *testing.T) {
	for _, r := range []StreamReply{
		{Code: CodeOK, Reason: "fine"},
		{Code: CodeOK, Service: strings.Repeat("s", MaxServiceName+1)},
		{Code: CodeDraining, Service: "db", Reason: "connector is shutting down"},
		{Code: codeLimit},
	} {
		b, err := AppendStreamReply([]byte("x"), r)
		if err == nil {
			t.Errorf("AppendStreamReply(%+v) succeeded", r)
		}
		if string(b) != "x" {
			t.Errorf("a refused reply changed b to %q", b)
		}
	}
}

func TestAppendStreamReplyCutsLongReason(t *testing.T) {
	long := strings.Repeat("0123456789", 300)
	b, err := AppendStreamReply(nil, StreamReply{Code: CodeBackendUnreachable, Reason: long})
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != 3+MaxReason {
		t.Fatalf("encoded reply is %d bytes, want %d", len(b), 3+MaxReason)
	}
	got, err := ReadStreamReply(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if got.Code != CodeBackendUnreachable || got.Reason != long[:MaxReason] {
		t.Fatalf("reply = %v, %d-byte reason", got.Code, len(got.Reason))
	}
}

func TestReadStreamReplyRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
		is   error
	}{
		{"code past the last", []byte{byte(codeLimit), 0, 0}, ErrMalformed},
		{"code 255", []byte{255, 0, 1, 'x'}, ErrMalformed},
		{"reason of 1025 bytes", append([]byte{1, 0x04, 0x01}, bytes.Repeat([]byte("r"), 1025)...), ErrMalformed},
		{"reason of 65535 bytes", []byte{1, 0xff, 0xff}, ErrMalformed},
		{"service of 64 bytes", append([]byte{0, 0, 64}, bytes.Repeat([]byte("s"), 64)...), ErrMalformed},
		{"truncated service", []byte{0, 0, 2}, io.ErrUnexpectedEOF},
		{"nothing", nil, io.EOF},
		{"truncated header", []byte{1, 0}, io.ErrUnexpectedEOF},
		{"truncated reason", []byte{1, 0, 5, 'a', 'b'}, io.ErrUnexpectedEOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadStreamReply(bytes.NewReader(tc.in))
			if !errors.Is(err, tc.is) {
				t.Fatalf("ReadStreamReply(% x) = %v, want %v", tc.in, err, tc.is)
			}
		})
	}
}

func TestStreamReplyErr(t *testing.T) {
	if err := (StreamReply{Code: CodeOK}).Err(); err != nil {
		t.Fatalf("an accepted reply is an error: %v", err)
	}
	err := StreamReply{Code: CodeDraining, Reason: "connector is shutting down"}.Err()
	var ref *Refusal
	if !errors.As(err, &ref) || ref.Code != CodeDraining || ref.Reason != "connector is shutting down" {
		t.Fatalf("Err() = %#v", err)
	}
}
