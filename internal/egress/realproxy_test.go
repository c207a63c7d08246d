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
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Real proxies from Debian (.ci/packages.txt: tinyproxy, dante-server),
// each started by the test as its own process on loopback with a config
// in t.TempDir, and killed by pid at the end.

const (
	proxyUser = "sallyport"
	proxyPass = "proxy-pass"
	// proxyPassHash is proxyPass's SHA-512 crypt hash (openssl passwd -6
	// -salt sallyportproxy proxy-pass), for dante's /etc/shadow.
	proxyPassHash = "$6$sallyportproxy$uR100UE5ADDr07Ike8xXt2XrNUFcTooF.wfS9jK8yeVU.R5onJQjEi8amJ/1LB//ltzZQAz7haqT63vicC2Hq1"
)

// freePort returns a loopback port nothing listens on just now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startProxy runs argv in a process group of its own, waits until port
// accepts connections, and kills the group at the end of the test.
func startProxy(t *testing.T, port int, argv ...string) *strings.Builder {
	t.Helper()
	if _, err := exec.LookPath(argv[0]); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true but %s is missing: install the packages in .ci/packages.txt", argv[0])
		}
		t.Skipf("NOT RUN: %s is missing (install the packages in .ci/packages.txt)", argv[0])
	}
	var out strings.Builder
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = &syncWriter{b: &out}, &syncWriter{b: &out}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
		if t.Failed() {
			t.Logf("%s output:\n%s", argv[0], out.String())
		}
	})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return &out
		}
		select {
		case <-exited:
			t.Fatalf("%s exited: %v\n%s", argv[0], waitErr, out.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not listen on %s: %v", argv[0], addr, err)
		}
	}
}

type syncWriter struct{ b *strings.Builder }

func (w *syncWriter) Write(p []byte) (int, error) { return w.b.Write(p) }

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
	port := freePort(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "tinyproxy.conf")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`Port %d
Listen 127.0.0.1
Timeout 30
MaxClients 20
LogLevel Info
BasicAuth %s %s
ConnectPort %s
`, port, proxyUser, proxyPass, edgePort)), 0o600)
	startProxy(t, port, "tinyproxy", "-d", "-c", cfg)
	proxy := fmt.Sprintf("127.0.0.1:%d", port)

	d := &Dialer{Proxy: mustURL(t, "http://"+proxyUser+":"+proxyPass+"@"+proxy)}
	if err := dialTLSThrough(t, d, edge, conf); err != nil {
		t.Fatalf("through tinyproxy: %v", err)
	}
	err := dialTLSThrough(t, &Dialer{Proxy: mustURL(t, "http://"+proxyUser+":wrong-pass@"+proxy)}, edge, conf)
	var ref *RefusedError
	if !errors.As(err, &ref) || !ref.Auth || !strings.Contains(err.Error(), "refused the credentials") || strings.Contains(err.Error(), "wrong-pass") {
		t.Errorf("wrong password: %v", err)
	}
	err = dialTLSThrough(t, &Dialer{Proxy: mustURL(t, "http://"+proxy)}, edge, conf)
	if !errors.As(err, &ref) || ref.Status != 407 || !strings.Contains(err.Error(), "requires credentials") {
		t.Errorf("no credentials: %v", err)
	}
	err = dialTLSThrough(t, d, fmt.Sprintf("127.0.0.1:%d", freePort(t)), conf)
	if !errors.As(err, &ref) || ref.Status != 403 || !strings.Contains(err.Error(), "its rules forbid it") {
		t.Errorf("forbidden port: %v", err)
	}
}

// TestDante: SOCKS5 through dante with username/password carries TLS end
// to end; a wrong password and a destination its rules block come back
// as refusals in words. dante checks passwords against the system's
// users: it runs in a mount namespace of its own (unshare) where
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
	blocked := freePort(t)
	port := freePort(t)
	dir := t.TempDir()
	passwd, _ := os.ReadFile("/etc/passwd")
	shadow, _ := os.ReadFile("/etc/shadow")
	os.WriteFile(filepath.Join(dir, "passwd"), append(passwd, []byte(proxyUser+":x:64999:64999::/nonexistent:/usr/sbin/nologin\n")...), 0o644)
	os.WriteFile(filepath.Join(dir, "shadow"), append(shadow, []byte(proxyUser+":"+proxyPassHash+":20000:0:99999:7:::\n")...), 0o600)
	cfg := filepath.Join(dir, "danted.conf")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`logoutput: stderr
internal: 127.0.0.1 port = %d
external: 127.0.0.1
clientmethod: none
socksmethod: username
user.privileged: root
user.unprivileged: nobody
client pass {
	from: 127.0.0.0/8 to: 0.0.0.0/0
}
socks block {
	from: 0.0.0.0/0 to: 127.0.0.1/32 port = %d
	log: error
}
socks pass {
	from: 0.0.0.0/0 to: 127.0.0.1/32 port = %s
	command: connect
	log: error
}
`, port, blocked, edgePort)), 0o600)
	script := fmt.Sprintf("mount --bind %s/passwd /etc/passwd && mount --bind %s/shadow /etc/shadow && exec danted -f %s -p %s/danted.pid",
		dir, dir, cfg, dir)
	if _, err := exec.LookPath("danted"); err != nil {
		startProxy(t, port, "danted") // skips or fails, naming it
	}
	startProxy(t, port, "unshare", "--mount", "--propagation", "private", "sh", "-c", script)
	proxy := fmt.Sprintf("127.0.0.1:%d", port)

	d := &Dialer{Proxy: mustURL(t, "socks5://"+proxyUser+":"+proxyPass+"@"+proxy)}
	if err := dialTLSThrough(t, d, edge, conf); err != nil {
		t.Fatalf("through dante: %v", err)
	}
	err := dialTLSThrough(t, &Dialer{Proxy: mustURL(t, "socks5h://"+proxyUser+":wrong-pass@"+proxy)}, edge, conf)
	var ref *RefusedError
	if !errors.As(err, &ref) || !ref.Auth || !strings.Contains(err.Error(), "refused the credentials") || strings.Contains(err.Error(), "wrong-pass") {
		t.Errorf("wrong password: %v", err)
	}
	err = dialTLSThrough(t, d, fmt.Sprintf("127.0.0.1:%d", blocked), conf)
	if !errors.As(err, &ref) || !strings.Contains(err.Error(), "connection not allowed by ruleset") {
		t.Errorf("blocked destination: %v", err)
	}
}
