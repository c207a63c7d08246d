package ingress

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"net/netip"
	"testing"

	"github.com/sallyport/sallyport/internal/admission"
)

// socksPeer is a client's bytes to read and the edge's answers written.
type socksPeer struct {
	in  io.Reader
	out bytes.Buffer
}

func (p *socksPeer) Read(b []byte) (int, error)  { return p.in.Read(b) }
func (p *socksPeer) Write(b []byte) (int, error) { return p.out.Write(b) }

func testSOCKSListener(users map[string]string) *socksListener {
	s := &Set{}
	s.routes.Store(&routes{known: map[string]bool{"echo": true}})
	f := &socksListener{s: s}
	if users != nil {
		hashes := socksUsers{}
		for u, pw := range users {
			hashes[u] = sha256.Sum256([]byte(pw))
		}
		f.users.Store(&hashes)
	}
	return f
}

func connectReq(atyp byte, addr []byte) []byte {
	b := []byte{5, 1, 0, atyp}
	if atyp == socksDomain {
		b = append(b, byte(len(addr)))
	}
	return append(append(b, addr...), 0, 80)
}

func TestSOCKSHandshake(t *testing.T) {
	greetNone := []byte{5, 1, 0}
	greetUser := []byte{5, 2, 0, 2}
	auth := func(u, p string) []byte {
		return append(append(append([]byte{1, byte(len(u))}, u...), byte(len(p))), p...)
	}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	tests := []struct {
		name    string
		users   map[string]string
		in      []byte
		dest    socksDest
		reply   socksReply
		reason  admission.Reason
		written []byte
	}{
		{name: "service by name", in: cat(greetNone, connectReq(socksDomain, []byte("Echo."))), dest: socksDest{service: "echo"}, written: []byte{5, 0}},
		{name: "not a service: a host and port", in: cat(greetNone, connectReq(socksDomain, []byte("db.internal"))), dest: socksDest{address: "db.internal:80"}, written: []byte{5, 0}},
		{name: "IPv4 address", in: cat(greetNone, connectReq(socksIPv4, []byte{10, 0, 0, 1})), dest: socksDest{address: "10.0.0.1:80", ip: true}, written: []byte{5, 0}},
		{name: "IPv6 address", in: cat(greetNone, connectReq(socksIPv6, make([]byte, 16))), dest: socksDest{address: "[::]:80", ip: true}, written: []byte{5, 0}},
		{name: "BIND", in: cat(greetNone, []byte{5, 2, 0, 3, 4, 'e', 'c', 'h', 'o', 0, 80}), reply: socksCommandNotSupported, reason: admission.ReasonSOCKS},
		{name: "address type 9", in: cat(greetNone, []byte{5, 1, 0, 9}), reply: socksAddrNotSupported, reason: admission.ReasonSOCKS},
		{name: "SOCKS4", in: []byte{4, 1, 0, 80, 127, 0, 0, 1, 0}, reason: admission.ReasonSOCKS},
		{name: "no method we take", in: []byte{5, 1, 2}, reason: admission.ReasonSOCKS, written: []byte{5, 0xff}},
		{name: "password needed", users: map[string]string{"alice": "pw"}, in: cat(greetNone, connectReq(socksDomain, []byte("echo"))), reason: admission.ReasonSOCKSAuth, written: []byte{5, 0xff}},
		{name: "password right", users: map[string]string{"alice": "pw"}, in: cat(greetUser, auth("alice", "pw"), connectReq(socksDomain, []byte("echo"))), dest: socksDest{service: "echo"}, written: []byte{5, 2, 1, 0}},
		{name: "password wrong", users: map[string]string{"alice": "pw"}, in: cat(greetUser, auth("alice", "px"), connectReq(socksDomain, []byte("echo"))), reason: admission.ReasonSOCKSAuth, written: []byte{5, 2, 1, 1}},
		{name: "unknown user", users: map[string]string{"alice": "pw"}, in: cat(greetUser, auth("bob", "pw")), reason: admission.ReasonSOCKSAuth, written: []byte{5, 2, 1, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := testSOCKSListener(tt.users)
			p := &socksPeer{in: bytes.NewReader(tt.in)}
			dest, reply, err := f.handshake(p, netip.Addr{})
			var ref *admission.Refusal
			switch {
			case tt.reason != "" && (!errors.As(err, &ref) || ref.Reason != tt.reason):
				t.Fatalf("err = %v, want a refusal for %s", err, tt.reason)
			case tt.reason == "" && err != nil:
				t.Fatalf("err = %v", err)
			}
			if dest != tt.dest || reply != tt.reply {
				t.Errorf("destination %+v, reply %d; want %+v, %d", dest, reply, tt.dest, tt.reply)
			}
			if tt.written != nil && !bytes.Equal(p.out.Bytes(), tt.written) {
				t.Errorf("wrote % x, want % x", p.out.Bytes(), tt.written)
			}
		})
	}
}

func FuzzSOCKSHandshake(f *testing.F) {
	f.Add([]byte{5, 1, 0, 5, 1, 0, 3, 4, 'e', 'c', 'h', 'o', 0, 80}, false)
	f.Add([]byte{5, 1, 2, 1, 5, 'a', 'l', 'i', 'c', 'e', 2, 'p', 'w', 5, 1, 0, 1, 10, 0, 0, 1, 0, 22}, true)
	f.Fuzz(func(t *testing.T, in []byte, auth bool) {
		var users map[string]string
		if auth {
			users = map[string]string{"alice": "pw"}
		}
		fr := testSOCKSListener(users)
		dest, _, err := fr.handshake(&socksPeer{in: bytes.NewReader(in)}, netip.Addr{})
		if err == nil && dest.service != "echo" && dest.address == "" {
			t.Fatalf("handshake accepted %+v, neither a configured service nor an address", dest)
		}
	})
}
