package egress

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeProxy listens on loopback and runs serve on each connection, which
// it closes after; the listener and every serve end with the test.
func fakeProxy(t *testing.T, serve func(c net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				serve(c)
			})
		}
	})
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().String()
}

// readRequest reads a CONNECT request's head and returns it.
func readRequest(c net.Conn) (*bufio.Reader, string) {
	br := bufio.NewReader(c)
	var head strings.Builder
	for {
		line, err := br.ReadString('\n')
		head.WriteString(line)
		if err != nil || line == "\r\n" {
			return br, head.String()
		}
	}
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := ParseProxy(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func dialVia(t *testing.T, proxyURL string, timeout time.Duration) (net.Conn, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	d := &Dialer{Proxy: mustURL(t, proxyURL)}
	return d.DialContext(ctx, "tcp", "edge.example.com:5500")
}

// TestConnectCarriesBytes: the CONNECT names the address, carries Basic
// credentials, and every byte after the proxy's headers reaches the caller
// (those the proxy sent in the same segment as its headers too).
func TestConnectCarriesBytes(t *testing.T) {
	got := make(chan string, 1)
	addr := fakeProxy(t, func(c net.Conn) {
		br, head := readRequest(c)
		got <- head
		io.WriteString(c, "HTTP/1.1 200 Connection established\r\nProxy-Agent: fake\r\n\r\nfirst bytes;")
		line, _ := br.ReadString('\n')
		io.WriteString(c, "echo:"+line)
	})
	c, err := dialVia(t, "http://alice:s3cret@"+addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	head := <-got
	if !strings.HasPrefix(head, "CONNECT edge.example.com:5500 HTTP/1.1\r\nHost: edge.example.com:5500\r\n") {
		t.Errorf("request head:\n%s", head)
	}
	want := "Proxy-Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte("alice:s3cret")) + "\r\n"
	if !strings.Contains(head, want) {
		t.Errorf("request head lacks %q:\n%s", want, head)
	}
	io.WriteString(c, "ping\n")
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != "first bytes;echo:ping\n" {
		t.Errorf("read %q, want the bytes after the headers then the echo", b)
	}
	if _, ok := c.(interface{ CloseWrite() error }); !ok {
		t.Error("the connection cannot half-close")
	}
}

// TestConnectRefusals: each refusal says what happened and what to do, and
// never shows the password.
func TestConnectRefusals(t *testing.T) {
	for _, tc := range []struct {
		name, answer, user string
		want               []string
		status             int
	}{
		{"407 without credentials", "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"x\"\r\n\r\n", "",
			[]string{"requires credentials (407 Proxy Authentication Required); give them in the proxy URL"}, 407},
		{"407 with credentials", "HTTP/1.0 407 Proxy Authentication Required\r\n\r\n", "bob:hunter2@",
			[]string{"refused the credentials in the proxy URL (407 Proxy Authentication Required)"}, 407},
		{"403", "HTTP/1.1 403 Forbidden\r\nContent-Length: 5\r\n\r\nnope!", "",
			[]string{"refuses to connect to edge.example.com:5500 (403 Forbidden)", "ask its administrator"}, 403},
		{"502", "HTTP/1.1 502 Bad Gateway\r\n\r\n", "bob:hunter2@",
			[]string{"could not connect to edge.example.com:5500 (502 Bad Gateway)"}, 502},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := fakeProxy(t, func(c net.Conn) {
				readRequest(c)
				io.WriteString(c, tc.answer)
			})
			_, err := dialVia(t, "http://"+tc.user+addr, 5*time.Second)
			var ref *RefusedError
			if !errors.As(err, &ref) || ref.Status != tc.status {
				t.Fatalf("err = %v, want a refusal with status %d", err, tc.status)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if !strings.Contains(err.Error(), addr) {
				t.Errorf("error %q does not name the proxy", err)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error %q shows the password", err)
			}
		})
	}
}

// TestConnectBadAnswers: a proxy that answers with too much, with
// something that is not HTTP, with nothing, or not in time, is cut off
// with an error that says so.
func TestConnectBadAnswers(t *testing.T) {
	endless := func(prefix, filler string) func(net.Conn) {
		return func(c net.Conn) {
			readRequest(c)
			io.WriteString(c, prefix)
			chunk := strings.Repeat(filler, 1024)
			for {
				if _, err := io.WriteString(c, chunk); err != nil {
					return
				}
			}
		}
	}
	for _, tc := range []struct {
		name  string
		serve func(net.Conn)
		want  string
		is    error
	}{
		{"endless status line", endless("HTTP/1.1 200 ", "a"), "too long", ErrResponseTooLong},
		{"endless headers", endless("HTTP/1.1 200 OK\r\n", "X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n"), "too long", ErrResponseTooLong},
		{"endless header line", endless("HTTP/1.1 200 OK\r\nX-Pad: ", "a"), "too long", ErrResponseTooLong},
		{"not HTTP", func(c net.Conn) { readRequest(c); c.Write([]byte{5, 0xff}); c.Write([]byte("\n")) }, "not HTTP", nil},
		{"closes", func(c net.Conn) { readRequest(c) }, "closed the connection", nil},
		{"ends in headers", func(c net.Conn) { readRequest(c); io.WriteString(c, "HTTP/1.1 200 OK\r\nX: y\r\n") }, "ends in its headers", nil},
		{"silent", func(c net.Conn) { readRequest(c); io.Copy(io.Discard, c) }, "within the dial timeout", context.DeadlineExceeded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := fakeProxy(t, tc.serve)
			_, err := dialVia(t, "http://u:hunter2@"+addr, 500*time.Millisecond)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one that says %q", err, tc.want)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("err = %v, want errors.Is %v", err, tc.is)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error %q shows the password", err)
			}
		})
	}
}

// TestProxyNotThere: a proxy address where nothing listens is named.
func TestProxyNotThere(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	for _, scheme := range []string{"http", "socks5h"} {
		_, err := dialVia(t, scheme+"://u:hunter2@"+addr, 5*time.Second)
		if err == nil || !strings.Contains(err.Error(), "cannot reach the proxy at "+addr) || !strings.Contains(err.Error(), "refused") {
			t.Errorf("%s: err = %v", scheme, err)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("error %q shows the password", err)
		}
	}
}

// TestReadConnectResponseNoOverRead: the reader stops at the blank line;
// what follows stays in the reader for the caller.
func TestReadConnectResponseNoOverRead(t *testing.T) {
	br := bufio.NewReader(strings.NewReader("HTTP/1.1 200 OK\nVia: x\n\n\x16\x03\x03rest"))
	code, reason, err := ReadConnectResponse(br)
	if err != nil || code != 200 || reason != "OK" {
		t.Fatalf("got %d %q %v", code, reason, err)
	}
	rest, _ := io.ReadAll(br)
	if string(rest) != "\x16\x03\x03rest" {
		t.Errorf("rest %q", rest)
	}
}
