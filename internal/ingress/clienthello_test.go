package ingress

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
)

// captureHello returns the first flight a real crypto/tls client sends
// with cfg: its ClientHello records.
func captureHello(t testing.TB, cfg *tls.Config) []byte {
	t.Helper()
	a, b := net.Pipe()
	var wg sync.WaitGroup
	wg.Go(func() { tls.Client(a, cfg).Handshake() })
	raw, _, err := readClientHello(b)
	b.Close()
	a.Close()
	wg.Wait()
	if err != nil {
		t.Fatalf("readClientHello of a crypto/tls ClientHello: %v", err)
	}
	return raw
}

// refragment splits a ClientHello's handshake bytes into records of at
// most n bytes each.
func refragment(raw []byte, n int) []byte {
	var msg []byte
	for r := raw; len(r) >= recordHeaderLen; {
		l := int(binary.BigEndian.Uint16(r[3:5]))
		msg = append(msg, r[recordHeaderLen:recordHeaderLen+l]...)
		r = r[recordHeaderLen+l:]
	}
	var out []byte
	for len(msg) > 0 {
		k := min(n, len(msg))
		out = append(out, recordTypeHandshake, 3, 1, byte(k>>8), byte(k))
		out = append(out, msg[:k]...)
		msg = msg[k:]
	}
	return out
}

func TestReadClientHelloFromCryptoTLS(t *testing.T) {
	tests := []struct {
		name string
		cfg  *tls.Config
		want string
	}{
		{"tls13", &tls.Config{ServerName: "mqtt.example.com"}, "mqtt.example.com"},
		{"upper case", &tls.Config{ServerName: "MQTT.Example.COM"}, "mqtt.example.com"},
		{"tls12 only", &tls.Config{ServerName: "a.example.com", MaxVersion: tls.VersionTLS12}, "a.example.com"},
		{"no name", &tls.Config{InsecureSkipVerify: true}, ""},
		{"IP address is not sent", &tls.Config{ServerName: "192.0.2.1"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := captureHello(t, tt.cfg)
			for _, frag := range []int{1 << 14, 100, 1} {
				in := raw
				if frag < 1<<14 {
					in = refragment(raw, frag)
				}
				r := bytes.NewReader(append(append([]byte{}, in...), "after"...))
				got, name, err := readClientHello(r)
				if err != nil || name != tt.want {
					t.Fatalf("fragments of %d: name %q, err %v; want %q", frag, name, err, tt.want)
				}
				if !bytes.Equal(got, in) {
					t.Fatalf("fragments of %d: returned %d bytes, not the %d read", frag, len(got), len(in))
				}
				if rest, _ := io.ReadAll(r); string(rest) != "after" {
					t.Fatalf("fragments of %d: read past the ClientHello (left %q)", frag, rest)
				}
			}
		})
	}
}

func TestReadClientHelloRefuses(t *testing.T) {
	good := captureHello(t, &tls.Config{ServerName: "a.example.com"})
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"http", []byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), errNotTLS},
		{"ssh banner", []byte("SSH-2.0-OpenSSH_9.2\r\n"), errNotTLS},
		{"alert record", []byte{21, 3, 3, 0, 2, 2, 40}, errNotTLS},
		{"SSLv2-style version", []byte{22, 2, 0, 0, 4, 1, 0, 0, 0}, errNotTLS},
		{"empty record", []byte{22, 3, 1, 0, 0}, errBadHello},
		{"huge record", []byte{22, 3, 1, 0xff, 0xff}, errBadHello},
		{"not a ClientHello", []byte{22, 3, 1, 0, 4, 2, 0, 0, 0}, errBadHello},
		{"empty ClientHello", []byte{22, 3, 1, 0, 4, 1, 0, 0, 0}, errBadHello},
		{"trailing message", appendRecord(good, []byte{20, 0, 0, 0}), errBadHello},
		{"truncated", good[:len(good)-1], io.ErrUnexpectedEOF},
		{"nothing", nil, io.EOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := readClientHello(bytes.NewReader(tt.in))
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

// appendRecord returns a ClientHello's records with extra handshake bytes
// appended to its message, in one record.
func appendRecord(raw, extra []byte) []byte {
	one := refragment(raw, 1<<14)
	msg := append(append([]byte{}, one[recordHeaderLen:]...), extra...)
	return append([]byte{recordTypeHandshake, 3, 1, byte(len(msg) >> 8), byte(len(msg))}, msg...)
}

func TestServerName(t *testing.T) {
	for in, want := range map[string]string{"a.Example.com": "a.example.com", "x_y-1.z": "x_y-1.z"} {
		if got, ok := serverName([]byte(in)); !ok || got != want {
			t.Errorf("serverName(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
	bad := []string{"", ".", "a.", ".a", "a..b", "a b", "a\x00b", "ä.example", strings.Repeat("a", 64) + ".b", strings.Repeat("a.", 127) + "aa"}
	for _, in := range bad {
		if got, ok := serverName([]byte(in)); ok {
			t.Errorf("serverName(%q) = %q, accepted", in, got)
		}
	}
}

func FuzzReadClientHello(f *testing.F) {
	for _, cfg := range []*tls.Config{
		{ServerName: "mqtt.example.com"},
		{ServerName: "a.example.com", MaxVersion: tls.VersionTLS12},
		{InsecureSkipVerify: true},
	} {
		raw := captureHello(f, cfg)
		f.Add(raw)
		f.Add(refragment(raw, 64))
	}
	f.Add([]byte("GET / HTTP/1.1\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		raw, name, err := readClientHello(bytes.NewReader(in))
		if !bytes.HasPrefix(in, raw) {
			t.Fatalf("returned bytes are not what was read")
		}
		if err == nil && name != "" {
			if again, ok := serverName([]byte(name)); !ok || again != name {
				t.Fatalf("accepted server name %q is not a valid lower-case name", name)
			}
		}
	})
}
