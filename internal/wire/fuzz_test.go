package wire

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzReadPreamble: no input panics ReadPreamble, and a preamble it
// accepts, or rejects only for its version, is exactly what WritePreamble
// writes for that version.
func FuzzReadPreamble(f *testing.F) {
	f.Add([]byte("SALLYPRT\x00\x01"))
	f.Add([]byte("SALLYPRT\x00\x02trailing"))
	f.Add([]byte("SALLYPRT\xff\xff"))
	f.Add([]byte("GET / HTTP/1.1\r\n"))
	f.Add([]byte("SALLY"))
	f.Fuzz(func(t *testing.T, data []byte) {
		err := ReadPreamble(bytes.NewReader(data), Version)
		version := Version
		var ve *VersionError
		switch {
		case err == nil:
		case errors.As(err, &ve):
			if ve.Local != Version {
				t.Fatalf("VersionError.Local = %d", ve.Local)
			}
			version = ve.Remote
		default:
			return
		}
		var buf bytes.Buffer
		if err := WritePreamble(&buf, version); err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(data, buf.Bytes()) {
			t.Fatalf("accepted % x, which is not the preamble % x", data, buf.Bytes())
		}
	})
}

// newBody returns a pointer to the body type of kind.
func newBody(kind Kind) any {
	switch kind {
	case KindHello:
		return new(Hello)
	case KindWelcome:
		return new(Welcome)
	case KindRefusal:
		return new(Refusal)
	case KindEnrollRequest:
		return new(EnrollRequest)
	case KindEnrollResponse:
		return new(EnrollResponse)
	case KindRenewRequest:
		return new(RenewRequest)
	case KindRenewResponse:
		return new(RenewResponse)
	case KindJoinRequest:
		return new(JoinRequest)
	case KindJoinResponse:
		return new(JoinResponse)
	case KindTimeRequest:
		return new(TimeRequest)
	case KindTimeResponse:
		return new(TimeResponse)
	}
	return nil
}

// FuzzReadMessage: no input panics ReadMessage, Decode or ReadExpect; a
// message that reads and decodes re-encodes to a message that decodes to
// the same value and the same bytes.
func FuzzReadMessage(f *testing.F) {
	for _, m := range messages() {
		var buf bytes.Buffer
		if err := WriteMessage(&buf, m.kind, m.v); err != nil {
			f.Fatal(err)
		}
		f.Add(buf.Bytes())
	}
	f.Add(append(header(byte(KindHello), 36), `{"instance":"a","services":null,"x":1}`...))
	f.Add(append(header(byte(KindWelcome), 25), `{"edge_id":"e","edges":[]}`...))
	f.Add(append(header(byte(KindRefusal), 25), `{"code":99,"reason":"no"}`...))
	f.Add(append(header(byte(KindEnrollRequest), 19), `{"csr":"AAEC\r\nAw=="}`...))
	for kind, body := range map[Kind]string{KindRenewRequest: `{"csr":"AAEC","x":1}`, KindRenewResponse: `{"certificate":null}`,
		KindJoinRequest:  `{"token":"sj1.x.y","csr":"AAEC","name":"sallyport-edge-1","advertise":"a:1","x":2}`,
		KindJoinResponse: `{"ca":"AA==","ca_key":"","certificate":null,"routes":["a:1",7]}`,
		KindTimeRequest:  `{"x":1}`, KindTimeResponse: `{"time":"2026-13-01T00:00:00Z"}`} {
		f.Add(append(header(byte(kind), uint32(len(body))), body...))
	}
	f.Add(header(byte(KindHello), 0xffffffff))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		kind, body, err := ReadMessage(r)
		for want := KindHello; want < kindLimit; want++ {
			err := ReadExpect(bytes.NewReader(data), want, newBody(want))
			var ref *Refusal
			if errors.As(err, &ref) && ref.Code >= codeLimit {
				t.Fatalf("ReadExpect passed on a refusal with code %d", ref.Code)
			}
		}
		if err != nil {
			return
		}
		if len(body) > MaxMessage || len(data)-r.Len() != 5+len(body) {
			t.Fatalf("ReadMessage consumed %d bytes for a %d-byte body", len(data)-r.Len(), len(body))
		}
		v := newBody(kind)
		if err := Decode(kind, body, v); err != nil {
			return
		}
		var once, twice bytes.Buffer
		if err := WriteMessage(&once, kind, v); err != nil {
			t.Fatalf("a decoded %s does not encode: %v", kind, err)
		}
		kind2, body2, err := ReadMessage(bytes.NewReader(once.Bytes()))
		if err != nil || kind2 != kind {
			t.Fatalf("re-encoded %s reads as %v, %v", kind, kind2, err)
		}
		v2 := newBody(kind)
		if err := Decode(kind2, body2, v2); err != nil {
			t.Fatalf("re-encoded %s does not decode: %v\n%s", kind, err, body2)
		}
		if err := WriteMessage(&twice, kind, v2); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(once.Bytes(), twice.Bytes()) {
			t.Fatalf("round trip changed the %s:\n%s\n%s", kind, once.Bytes()[5:], twice.Bytes()[5:])
		}
	})
}

// FuzzReadStreamOpen: no input panics ReadStreamOpen, and a header it
// accepts encodes back to exactly the bytes it consumed.
func FuzzReadStreamOpen(f *testing.F) {
	b, _ := AppendStreamOpen(nil, StreamOpen{Service: "db", Client: "127.0.0.1:5000"})
	f.Add(b)
	f.Add(append(b, "client bytes"...))
	f.Add([]byte{0})
	f.Add([]byte{64, 'a'})
	f.Add([]byte{1, 'a', 0})
	f.Add([]byte{1, 'a', 255, 'x'})
	a, _ := AppendStreamOpen(nil, StreamOpen{Client: "198.18.0.1:5000", Address: "db.internal:5432"})
	f.Add(a)
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		h, err := ReadStreamOpen(r)
		if err != nil {
			return
		}
		out, err := AppendStreamOpen(nil, h)
		if err != nil {
			t.Fatalf("an accepted header does not encode: %v (%+v)", err, h)
		}
		if consumed := data[:len(data)-r.Len()]; !bytes.Equal(out, consumed) {
			t.Fatalf("read % x, encodes as % x", consumed, out)
		}
	})
}

// FuzzReadStreamReply: no input panics ReadStreamReply, and a reply it
// accepts encodes back to exactly the bytes it consumed.
func FuzzReadStreamReply(f *testing.F) {
	for _, r := range []StreamReply{
		{Code: CodeOK},
		{Code: CodeOK, Service: "db"},
		{Code: CodeDraining, Reason: "connector is shutting down"},
	} {
		b, err := AppendStreamReply(nil, r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{byte(codeLimit), 0, 0})
	f.Add([]byte{1, 0x04, 0x01})
	f.Add([]byte{1, 0, 3, 'a'})
	f.Add([]byte{0, 0, 64})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		rep, err := ReadStreamReply(r)
		if err != nil {
			return
		}
		if rep.Code >= codeLimit || len(rep.Reason) > MaxReason || len(rep.Service) > MaxServiceName {
			t.Fatalf("accepted an out-of-range reply %v with a %d-byte reason and a %d-byte service", rep.Code, len(rep.Reason), len(rep.Service))
		}
		out, err := AppendStreamReply(nil, rep)
		if err != nil {
			t.Fatalf("an accepted reply does not encode: %v (%+v)", err, rep)
		}
		if consumed := data[:len(data)-r.Len()]; !bytes.Equal(out, consumed) {
			t.Fatalf("read % x, encodes as % x", consumed, out)
		}
	})
}

// FuzzReadEdgeSet: no input panics ReadEdgeSet, a set it accepts is
// within its bounds and encodes back to exactly the bytes it read.
func FuzzReadEdgeSet(f *testing.F) {
	b, _ := AppendEdgeSet(nil, []EdgeAddr{{ID: "edge-a", Address: "127.0.0.1:5500"}, {ID: "edge-b", Address: "wss://b.example/tunnel"}})
	f.Add(b)
	f.Add(append(b, 0))
	f.Add([]byte{0})
	f.Add([]byte{})
	f.Add([]byte{65})
	f.Add([]byte{1, 1, 'a', 3, 'a', ' ', 'b'})
	f.Add([]byte{1, 1, 'a', 255, 'x'})
	f.Add(bytes.Repeat([]byte{255}, MaxEdgeSet+2))
	f.Fuzz(func(t *testing.T, data []byte) {
		set, err := ReadEdgeSet(bytes.NewReader(data))
		if err != nil {
			return
		}
		if len(set) > MaxEdges {
			t.Fatalf("accepted %d edges", len(set))
		}
		out, err := AppendEdgeSet(nil, set)
		if err != nil {
			t.Fatalf("an accepted set does not encode: %v (%+v)", err, set)
		}
		if !bytes.Equal(out, data) {
			t.Fatalf("read % x, encodes as % x", data, out)
		}
	})
}
