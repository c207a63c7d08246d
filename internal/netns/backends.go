//go:build linux

package netns

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/throwawaysshd"
)

// BackendTools are the programs the back-ends and clients need, from
// Debian's python3, redis-server, redis-tools, openssh-server,
// openssh-client and curl packages.
var BackendTools = []string{"python3", "redis-server", "redis-cli", "redis-benchmark", "sshd", "ssh", "ssh-keygen", "curl"}

// HTTPServer is python3's http.server serving a directory in trusted.
type HTTPServer struct {
	*Process
	Port int
	// Hello is the content of /hello.txt, unique to the run.
	Hello string
	// BigSize and BigSHA256 describe /big.bin, random bytes.
	BigSize   int
	BigSHA256 string
	// HugeSize is the size of /huge.bin, random bytes: more than every
	// buffer between the back-end and a client holds, so that a slow
	// download of it is still crossing the tunnel seconds after it began.
	HugeSize   int
	HugeSHA256 string
}

// StartHTTP serves a fresh directory with /hello.txt, a random /big.bin of
// bigSize bytes and a random /huge.bin of hugeSize bytes on every address
// of n, port port.
func StartHTTP(t testing.TB, n *Namespace, port, bigSize, hugeSize int) *HTTPServer {
	t.Helper()
	dir := t.TempDir()
	id := make([]byte, 8)
	rand.Read(id)
	h := &HTTPServer{Port: port, Hello: "hello from trusted " + hex.EncodeToString(id) + "\n", BigSize: bigSize, HugeSize: hugeSize}
	writeFile(t, filepath.Join(dir, "hello.txt"), []byte(h.Hello), 0o644)
	big := make([]byte, bigSize)
	rand.Read(big)
	sum := sha256.Sum256(big)
	h.BigSHA256 = hex.EncodeToString(sum[:])
	writeFile(t, filepath.Join(dir, "big.bin"), big, 0o644)
	huge := make([]byte, hugeSize)
	rand.Read(huge)
	sum = sha256.Sum256(huge)
	h.HugeSHA256 = hex.EncodeToString(sum[:])
	writeFile(t, filepath.Join(dir, "huge.bin"), huge, 0o644)
	h.Process = n.Start(t, "http.server", python3(), "-m", "http.server", strconv.Itoa(port),
		"--bind", "0.0.0.0", "--directory", dir)
	WaitListening(t, n, "127.0.0.1:"+strconv.Itoa(port), h.Process)
	return h
}

// python3 prefers Debian's interpreter over a version manager's shim.
func python3() string {
	if _, err := os.Stat("/usr/bin/python3"); err == nil {
		return "/usr/bin/python3"
	}
	return "python3"
}

// Redis is a redis-server on trusted's loopback, without persistence.
type Redis struct {
	*Process
	Port int
}

// StartRedis runs redis-server on 127.0.0.1:port in n, keeping nothing on disk.
func StartRedis(t testing.TB, n *Namespace, port int) *Redis {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatal(err)
	}
	r := &Redis{Port: port}
	r.Process = n.Start(t, "redis-server", bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", t.TempDir(), "--loglevel", "warning")
	WaitListening(t, n, "127.0.0.1:"+strconv.Itoa(port), r.Process)
	return r
}

// SSHD is an OpenSSH server with a throwaway host key that lets root in
// with a throwaway client key.
type SSHD struct {
	*Process
	Port int
	// ClientKey is the private key file a client logs in with, as root.
	ClientKey string
}

// StartSSHD generates a host key and a client key and runs sshd -D -e on
// every address of n, port port, with its own config file.
func StartSSHD(t testing.TB, n *Namespace, port int) *SSHD {
	t.Helper()
	srv, err := throwawaysshd.Prepare(t.TempDir(), "0.0.0.0", port, "LogLevel VERBOSE")
	if err != nil {
		t.Fatal(err)
	}
	s := &SSHD{Port: port, ClientKey: srv.ClientKey}
	s.Process = n.Start(t, "sshd", srv.Command()...)
	WaitListening(t, n, "127.0.0.1:"+strconv.Itoa(port), s.Process)
	return s
}

// SSHArgs returns the ssh command line that runs command on host:port as
// root with the client key, non-interactively.
func (s *SSHD) SSHArgs(host string, port int, command string) []string {
	return []string{"ssh", "-F", "/dev/null", "-i", s.ClientKey, "-p", strconv.Itoa(port),
		"-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
		"-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR",
		"root@" + host, command}
}

// WaitListening waits up to 15s until addr accepts a connection from
// inside n, failing the test if p ends or the time runs out.
func WaitListening(t testing.TB, n *Namespace, addr string, p *Process) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := n.DialTimeout(addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-p.Done():
			t.Fatalf("%s ended before listening on %s: %v\n%s", p.Name, addr, p.Wait(0), p.Log.Tail(40))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not listening on %s within 15s: %v\n%s", p.Name, addr, err, p.Log.Tail(40))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func writeFile(t testing.TB, path string, data []byte, perm os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, data, perm); err != nil {
		t.Fatal(err)
	}
}
