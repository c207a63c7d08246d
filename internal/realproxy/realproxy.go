//go:build linux

// Package realproxy runs real proxies from Debian for tests: tinyproxy
// for HTTP CONNECT with Basic credentials and dante (danted) for SOCKS5
// with username/password, each with a config of its own in a directory
// the test owns. Both accept User and Password.
//
//	argv := realproxy.Tinyproxy(t, t.TempDir(), realproxy.TinyproxyConfig{
//		Listen: "127.0.0.1", Port: port, ConnectPorts: []int{443}})
//	realproxy.Start(t, port, argv...)   // on this host; or run argv in a namespace
//
// dante checks passwords against the system's users, so Dante's command
// runs it in a mount namespace of its own (unshare) where /etc/passwd and
// /etc/shadow are copies with User added: the machine's own user
// database is never touched. It needs root.
package realproxy

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/logbuf"
)

// The credentials both proxies accept.
const (
	User     = "sallyport"
	Password = "proxy-pass"
	// passwordHash is Password's SHA-512 crypt hash (openssl passwd -6
	// -salt sallyportproxy proxy-pass), for dante's /etc/shadow.
	passwordHash = "$6$sallyportproxy$uR100UE5ADDr07Ike8xXt2XrNUFcTooF.wfS9jK8yeVU.R5onJQjEi8amJ/1LB//ltzZQAz7haqT63vicC2Hq1"
)

// Tools are the programs the proxies need, from Debian's tinyproxy,
// dante-server and util-linux packages (.ci/packages.txt).
var Tools = []string{"tinyproxy", "danted", "unshare"}

// Require skips t, loudly, when one of tools is not on PATH, or fails it
// when the environment variable CI is true: a CI run must not pass the
// proxy tests unchecked.
func Require(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("CI=true but %s is missing: install the packages in .ci/packages.txt", tool)
			}
			t.Skipf("NOT RUN: %s is missing (install the packages in .ci/packages.txt)", tool)
		}
	}
}

// TinyproxyConfig is what Tinyproxy's proxy does.
type TinyproxyConfig struct {
	Listen       string // the address it listens on
	Port         int    // the port it listens on
	ConnectPorts []int  // the only ports CONNECT may reach; none means every port
}

// Tinyproxy writes tinyproxy's config into dir and returns the command
// that runs it in the foreground, logging to its standard output, with
// Basic credentials User and Password required.
func Tinyproxy(t testing.TB, dir string, c TinyproxyConfig) []string {
	t.Helper()
	var ports strings.Builder
	for _, p := range c.ConnectPorts {
		fmt.Fprintf(&ports, "ConnectPort %d\n", p)
	}
	cfg := filepath.Join(dir, "tinyproxy.conf")
	write(t, cfg, fmt.Sprintf(`Port %d
Listen %s
Timeout 30
MaxClients 20
LogLevel Info
BasicAuth %s %s
%s`, c.Port, c.Listen, User, Password, ports.String()), 0o600)
	return []string{"tinyproxy", "-d", "-c", cfg}
}

// DanteConfig is what Dante's proxy does.
type DanteConfig struct {
	Listen   string // the address it listens on
	Port     int    // the port it listens on
	External string // the address it connects from
	Clients  string // the network its clients come from, e.g. 127.0.0.0/8
	// Allow and Block are dante destinations ("127.0.0.1/32 port = 443"):
	// CONNECT to an Allow one is passed, to a Block one refused with
	// "connection not allowed by ruleset". Block rules come first.
	Allow, Block []string
}

// Dante writes dante's config and its copies of /etc/passwd and
// /etc/shadow (with User added) into dir, and returns the command that
// runs danted in a mount namespace of its own, where the copies are
// mounted over the originals, requiring User and Password. It logs to
// its standard error.
func Dante(t testing.TB, dir string, c DanteConfig) []string {
	t.Helper()
	passwd, err := os.ReadFile("/etc/passwd")
	if err != nil {
		t.Fatal(err)
	}
	shadow, err := os.ReadFile("/etc/shadow")
	if err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "passwd"), string(passwd)+User+":x:64999:64999::/nonexistent:/usr/sbin/nologin\n", 0o644)
	write(t, filepath.Join(dir, "shadow"), string(shadow)+User+":"+passwordHash+":20000:0:99999:7:::\n", 0o600)
	var rules strings.Builder
	for _, to := range c.Block {
		fmt.Fprintf(&rules, "socks block {\n\tfrom: 0.0.0.0/0 to: %s\n\tlog: error\n}\n", to)
	}
	for _, to := range c.Allow {
		fmt.Fprintf(&rules, "socks pass {\n\tfrom: 0.0.0.0/0 to: %s\n\tcommand: connect\n\tlog: error\n}\n", to)
	}
	cfg := filepath.Join(dir, "danted.conf")
	write(t, cfg, fmt.Sprintf(`logoutput: stderr
internal: %s port = %d
external: %s
clientmethod: none
socksmethod: username
user.privileged: root
user.unprivileged: nobody
client pass {
	from: %s to: 0.0.0.0/0
}
%s`, c.Listen, c.Port, c.External, c.Clients, rules.String()), 0o600)
	script := fmt.Sprintf("mount --bind %s/passwd /etc/passwd && mount --bind %s/shadow /etc/shadow && exec danted -f %s -p %s/danted.pid",
		dir, dir, cfg, dir)
	return []string{"unshare", "--mount", "--propagation", "private", "sh", "-c", script}
}

func write(t testing.TB, path, data string, perm os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), perm); err != nil {
		t.Fatal(err)
	}
}

// FreePort returns a loopback port nothing listens on just now.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// Start runs argv on this host in a process group of its own, waits up
// to 10s until 127.0.0.1:port accepts connections, and kills the group
// by its id when the test ends (and the kernel kills it should the test
// process die first). It returns the program's output, which goes to
// the test log if the test failed.
func Start(t testing.TB, port int, argv ...string) *logbuf.Buffer {
	t.Helper()
	Require(t, argv[0])
	out := &logbuf.Buffer{}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = out, out
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
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return out
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
