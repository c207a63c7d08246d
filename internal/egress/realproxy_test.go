//go:build linux

package egress

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/realproxy"
)

// Real proxies from Debian (internal/realproxy), each started by the test
// as its own process on loopback with a config in t.TempDir, and killed
// by pid at the end.

// echoTLS runs a TLS echo server on loopback, the edge's stand-in, and
// returns its address and a client config that trusts only its
// certificate. The server ends with the test.
func echoTLS(t *testing.T) (string, *tls.Config) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "edge"},
		DNSNames: []string{"edge"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{MinVersion: tls.VersionTLS13,
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}})
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
			wg.Go(func() { defer c.Close(); io.Copy(c, c) })
		}
	})
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "edge", MinVersion: tls.VersionTLS13}
}

func dialTLSThrough(t *testing.T, d *Dialer, addr string, conf *tls.Config) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	tc := tls.Client(raw, conf)
	defer tc.Close()
	if err := tc.HandshakeContext(ctx); err != nil {
		return fmt.Errorf("TLS: %w", err)
	}
	io.WriteString(tc, "through the proxy\n")
	b := make([]byte, len("through the proxy\n"))
	if _, err := io.ReadFull(tc, b); err != nil || string(b) != "through the proxy\n" {
		return fmt.Errorf("echo %q: %v", b, err)
	}
	return nil
}

// TestTinyproxy: HTTP CONNECT through tinyproxy with Basic credentials
// carries TLS end to end; a wrong password and a port its rules forbid
// come back as refusals in words.
func TestTinyproxy(t *testing.T) {
	edge, conf := echoTLS(t)
	_, edgePort, _ := net.SplitHostPort(edge)
	port := realproxy.FreePort(t)
	ep, _ := strconv.Atoi(edgePort)
	realproxy.Start(t, port, realproxy.Tinyproxy(t, t.TempDir(), realproxy.TinyproxyConfig{
		Listen: "127.0.0.1", Port: port, ConnectPorts: []int{ep}})...)
	proxy := fmt.Sprintf("127.0.0.1:%d", port)

	d := &Dialer{Proxy: mustURL(t, "http://"+realproxy.User+":"+realproxy.Password+"@"+proxy)}
	if err := dialTLSThrough(t, d, edge, conf); err != nil {
		t.Fatalf("through tinyproxy: %v", err)
	}
	err := dialTLSThrough(t, &Dialer{Proxy: mustURL(t, "http://"+realproxy.User+":wrong-pass@"+proxy)}, edge, conf)
	var ref *RefusedError
	if !errors.As(err, &ref) || !ref.Auth || !strings.Contains(err.Error(), "refused the credentials") || strings.Contains(err.Error(), "wrong-pass") {
		t.Errorf("wrong password: %v", err)
	}
	err = dialTLSThrough(t, &Dialer{Proxy: mustURL(t, "http://"+proxy)}, edge, conf)
	if !errors.As(err, &ref) || ref.Status != 407 || !strings.Contains(err.Error(), "requires credentials") {
		t.Errorf("no credentials: %v", err)
	}
	err = dialTLSThrough(t, d, fmt.Sprintf("127.0.0.1:%d", realproxy.FreePort(t)), conf)
	if !errors.As(err, &ref) || ref.Status != 403 || !strings.Contains(err.Error(), "its rules forbid it") {
		t.Errorf("forbidden port: %v", err)
	}
}

// TestDante: SOCKS5 through dante with username/password carries TLS end
// to end; a wrong password and a destination its rules block come back
// as refusals in words. dante checks passwords against the system's
// users: realproxy runs it in a mount namespace of its own (unshare) where
// /etc/passwd and /etc/shadow are copies with one more user, so the
// machine's own user database is never touched.
func TestDante(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI=true but not root: dante needs a mount namespace for its test user")
		}
		t.Skip("NOT RUN: dante's test needs root (a mount namespace for its test user)")
	}
	edge, conf := echoTLS(t)
	_, edgePort, _ := net.SplitHostPort(edge)
	blocked := realproxy.FreePort(t)
	port := realproxy.FreePort(t)
	realproxy.Require(t, "danted", "unshare")
	realproxy.Start(t, port, realproxy.Dante(t, t.TempDir(), realproxy.DanteConfig{
		Listen: "127.0.0.1", Port: port, External: "127.0.0.1", Clients: "127.0.0.0/8",
		Block: []string{fmt.Sprintf("127.0.0.1/32 port = %d", blocked)},
		Allow: []string{"127.0.0.1/32 port = " + edgePort},
	})...)
	proxy := fmt.Sprintf("127.0.0.1:%d", port)

	d := &Dialer{Proxy: mustURL(t, "socks5://"+realproxy.User+":"+realproxy.Password+"@"+proxy)}
	if err := dialTLSThrough(t, d, edge, conf); err != nil {
		t.Fatalf("through dante: %v", err)
	}
	err := dialTLSThrough(t, &Dialer{Proxy: mustURL(t, "socks5h://"+realproxy.User+":wrong-pass@"+proxy)}, edge, conf)
	var ref *RefusedError
	if !errors.As(err, &ref) || !ref.Auth || !strings.Contains(err.Error(), "refused the credentials") || strings.Contains(err.Error(), "wrong-pass") {
		t.Errorf("wrong password: %v", err)
	}
	err = dialTLSThrough(t, d, fmt.Sprintf("127.0.0.1:%d", blocked), conf)
	if !errors.As(err, &ref) || !strings.Contains(err.Error(), "connection not allowed by ruleset") {
		t.Errorf("blocked destination: %v", err)
	}
}
