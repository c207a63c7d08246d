package egress

import (
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// socksServer is a fake SOCKS5 server that wants user/password
// credentials (when user is set), records the request's address and
// answers it with reply, then echoes.
func socksServer(t *testing.T, user, pass string, reply byte, asked chan<- string) string {
	return fakeProxy(t, func(c net.Conn) {
		b := make([]byte, 512)
		if _, err := io.ReadFull(c, b[:2]); err != nil {
			return
		}
		methods := b[:b[1]]
		io.ReadFull(c, methods)
		if user != "" && !strings.Contains(string(methods), "\x02") {
			c.Write([]byte{5, 0xff})
			return
		}
		if user == "" {
			c.Write([]byte{5, 0})
		} else {
			c.Write([]byte{5, 2})
			io.ReadFull(c, b[:2])
			u := make([]byte, b[1])
			io.ReadFull(c, u)
			io.ReadFull(c, b[:1])
			p := make([]byte, b[0])
			io.ReadFull(c, p)
			if string(u) != user || string(p) != pass {
				c.Write([]byte{1, 1})
				return
			}
			c.Write([]byte{1, 0})
		}
		io.ReadFull(c, b[:4])
		var host string
		switch b[3] {
		case 1:
			io.ReadFull(c, b[:4])
			host = net.IP(b[:4]).String()
		case 3:
			io.ReadFull(c, b[:1])
			h := make([]byte, b[0])
			io.ReadFull(c, h)
			host = string(h)
		}
		io.ReadFull(c, b[:2])
		asked <- host
		c.Write([]byte{5, reply, 0, 1, 127, 0, 0, 1, 0, 80})
		if reply == 0 {
			io.Copy(c, c)
		}
	})
}

// TestSOCKS5Connects: socks5h hands the name to the proxy, socks5 an
// address resolved here, and bytes flow both ways afterwards.
func TestSOCKS5Connects(t *testing.T) {
	for _, tc := range []struct{ scheme, addr, want string }{
		{"socks5h", "edge.example.com:5500", "edge.example.com"},
		{"socks5", "localhost:5500", "127.0.0.1"},
	} {
		t.Run(tc.scheme, func(t *testing.T) {
			asked := make(chan string, 1)
			addr := socksServer(t, "alice", "s3cret", 0, asked)
			d := &Dialer{Proxy: mustURL(t, tc.scheme+"://alice:s3cret@"+addr)}
			ctx, cancel := contextTimeout(5 * time.Second)
			defer cancel()
			c, err := d.DialContext(ctx, "tcp", tc.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if got := <-asked; got != tc.want {
				t.Errorf("the proxy was asked for %q, want %q", got, tc.want)
			}
			io.WriteString(c, "ping")
			b := make([]byte, 4)
			if _, err := io.ReadFull(c, b); err != nil || string(b) != "ping" {
				t.Errorf("echo %q %v", b, err)
			}
		})
	}
}

// TestSOCKS5Refusals: each reply code and an authentication failure come
// back in words, without the password.
func TestSOCKS5Refusals(t *testing.T) {
	for code, want := range map[byte]string{
		1: "general SOCKS server failure",
		2: "refuses to connect to edge.example.com:5500 (connection not allowed by ruleset): its rules forbid it",
		3: "could not connect to edge.example.com:5500 (network unreachable)",
		4: "(host unreachable)",
		5: "(connection refused)",
		6: "(TTL expired)",
		7: "(command not supported)",
		8: "(address type not supported)",
	} {
		asked := make(chan string, 1)
		addr := socksServer(t, "alice", "s3cret", code, asked)
		_, err := dialVia(t, "socks5h://alice:s3cret@"+addr, 5*time.Second)
		var ref *RefusedError
		if !errors.As(err, &ref) || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "SOCKS5 proxy at "+addr) {
			t.Errorf("reply %d: err = %v, want a refusal saying %q", code, err, want)
		}
	}
	asked := make(chan string, 1)
	addr := socksServer(t, "alice", "s3cret", 0, asked)
	_, err := dialVia(t, "socks5h://alice:hunter2@"+addr, 5*time.Second)
	var ref *RefusedError
	if !errors.As(err, &ref) || !ref.Auth || !strings.Contains(err.Error(), "refused the credentials in the proxy URL") {
		t.Errorf("wrong password: err = %v", err)
	}
	if err != nil && strings.Contains(err.Error(), "hunter2") {
		t.Errorf("error %q shows the password", err)
	}
	_, err = dialVia(t, "socks5h://"+addr, 5*time.Second)
	if !errors.As(err, &ref) || !ref.Auth || !strings.Contains(err.Error(), "requires credentials") {
		t.Errorf("no credentials: err = %v", err)
	}
}

// TestSOCKS5Silent: a SOCKS proxy that never answers is cut off at the
// dial timeout.
func TestSOCKS5Silent(t *testing.T) {
	addr := fakeProxy(t, func(c net.Conn) { io.Copy(io.Discard, c) })
	_, err := dialVia(t, "socks5h://"+addr, 300*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "within the dial timeout") {
		t.Fatalf("err = %v", err)
	}
}
