package packaging_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/childproc/childproctest"
	"github.com/sallyport/sallyport/internal/loopback"
	"github.com/sallyport/sallyport/internal/testnet"
)

// bin is the static binary under test (CGO_ENABLED=0, as the image
// holds it), built by TestMain.
var bin string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "sallyport-pkg-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "make a directory for the binary:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	bin = filepath.Join(dir, "sallyport")
	build := exec.Command("go", "build", "-trimpath", "-o", bin, "../cmd/sallyport")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build sallyport:", err)
		return 1
	}
	return m.Run()
}

// requireTool skips the test when tool is not on PATH, or fails it
// under CI=true, where .ci/packages.txt installs it.
func requireTool(t *testing.T, tool string) string {
	t.Helper()
	p, err := exec.LookPath(tool)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not found, and CI=true requires it (.ci/packages.txt installs it)", tool)
		}
		t.Skipf("%s not found", tool)
	}
	return p
}

// unit is a systemd unit file: each section's keys with every value
// they are given, in order.
type unit map[string]map[string][]string

// readUnit parses the unit file at path (comments, sections and
// key=value lines; the units here use no line continuations).
func readUnit(t *testing.T, path string) unit {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := unit{}
	section := ""
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			u[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" || strings.HasSuffix(line, `\`) {
				t.Fatalf("%s:%d: not a key=value line in a section: %q", path, n, line)
			}
			u[section][k] = append(u[section][k], v)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return u
}

// get returns the last value of key in section, as systemd applies it,
// and whether the key is set at all.
func (u unit) get(section, key string) (string, bool) {
	vs := u[section][key]
	if len(vs) == 0 {
		return "", false
	}
	return vs[len(vs)-1], true
}

// roles are the units' roles: sallyport-ROLE.service runs `sallyport ROLE`.
var roles = []string{"edge", "connector"}

func unitPath(role string) string {
	return filepath.Join("systemd", "sallyport-"+role+".service")
}

// systemd-analyze verify accepts both units as they are but for the
// binary's path, which must exist: it is pointed at the binary under
// test. Any warning it prints (an unknown key, a bad value, a directive
// in the wrong section) fails the test.
func TestUnitsVerify(t *testing.T) {
	sa := requireTool(t, "systemd-analyze")
	dir := t.TempDir()
	var files []string
	for _, role := range roles {
		b, err := os.ReadFile(unitPath(role))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), "ExecStart=/usr/bin/sallyport ") {
			t.Fatalf("%s: ExecStart does not run /usr/bin/sallyport", unitPath(role))
		}
		p := filepath.Join(dir, filepath.Base(unitPath(role)))
		if err := os.WriteFile(p, []byte(strings.ReplaceAll(string(b), "/usr/bin/sallyport", bin)), 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, p)
	}
	out, err := exec.Command(sa, append([]string{"verify"}, files...)...).CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// systemd-sysusers accepts the sysusers.d line that makes the units'
// user (without writing anything: --dry-run).
func TestSysusers(t *testing.T) {
	tool := requireTool(t, "systemd-sysusers")
	path, err := filepath.Abs(filepath.Join("systemd", "sallyport.sysusers"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(tool, "--dry-run", path).CombinedOutput()
	if err != nil || strings.Contains(string(out), "ignoring") || strings.Contains(string(out), "Failed") {
		t.Fatalf("systemd-sysusers --dry-run %s: %v\n%s", path, err, out)
	}
}

// The hardening each unit promises: no capability but binding low ports,
// and that for the edge alone; a read-only system; notify readiness.
func TestUnitsHardening(t *testing.T) {
	want := map[string]string{
		"Type":                    "notify",
		"NoNewPrivileges":         "yes",
		"ProtectSystem":           "strict",
		"ProtectHome":             "yes",
		"PrivateTmp":              "yes",
		"MemoryDenyWriteExecute":  "yes",
		"LockPersonality":         "yes",
		"RestrictNamespaces":      "yes",
		"ProtectKernelTunables":   "yes",
		"ProtectKernelModules":    "yes",
		"ProtectKernelLogs":       "yes",
		"ProtectControlGroups":    "yes",
		"SystemCallArchitectures": "native",
		"Restart":                 "on-failure",
		"User":                    "sallyport",
		"StateDirectory":          "", // per role, below
		"ExecReload":              "/bin/kill -HUP $MAINPID",
	}
	for _, role := range roles {
		u := readUnit(t, unitPath(role))
		for k, v := range want {
			if k == "StateDirectory" {
				v = "sallyport/" + role
			}
			if got, ok := u.get("Service", k); !ok || got != v {
				t.Errorf("%s: %s=%q, want %q", role, k, got, v)
			}
		}
		if got, _ := u.get("Service", "ExecStart"); !strings.HasPrefix(got, "/usr/bin/sallyport "+role+" ") {
			t.Errorf("%s: ExecStart=%q does not run sallyport %s", role, got, role)
		}
		if _, ok := u.get("Service", "WatchdogSec"); ok {
			t.Errorf("%s: WatchdogSec set, but sallyport sends no WATCHDOG=1: systemd would kill it", role)
		}
		caps, _ := u.get("Service", "CapabilityBoundingSet")
		ambient, _ := u.get("Service", "AmbientCapabilities")
		wantCaps := ""
		if role == "edge" {
			wantCaps = "CAP_NET_BIND_SERVICE"
		}
		if caps != wantCaps || ambient != wantCaps {
			t.Errorf("%s: CapabilityBoundingSet=%q AmbientCapabilities=%q, want %q for both", role, caps, ambient, wantCaps)
		}
	}
}

// notifySocket plays systemd for one process: the datagram socket that
// $NOTIFY_SOCKET names.
type notifySocket struct {
	path string
	conn *net.UnixConn
}

func listenNotify(t *testing.T) *notifySocket {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &notifySocket{path: path, conn: c}
}

// next returns the next notification, waiting at most 30 s.
func (s *notifySocket) next(t *testing.T) string {
	t.Helper()
	s.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	b := make([]byte, 256)
	n, err := s.conn.Read(b)
	if err != nil {
		t.Fatalf("no notification on %s: %v", s.path, err)
	}
	return string(b[:n])
}

// start runs bin with args, env added to the test's environment; see
// childproctest.Start.
func start(t *testing.T, name string, env []string, args ...string) *childproctest.Proc {
	t.Helper()
	return childproctest.Start(t, name, bin, env, args...)
}

// sallyport runs bin with args to its end and returns its exit code and
// output.
func sallyport(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e strings.Builder
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), o.String(), e.String()
	} else if err != nil {
		t.Fatalf("run sallyport %s: %v", strings.Join(args, " "), err)
	}
	return 0, o.String(), e.String()
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	_, port, _ := net.SplitHostPort(loopback.FreeAddr(t))
	n, _ := strconv.Atoi(port)
	return n
}

// echo is a back-end on loopback that sends back what it reads.
func echo(t *testing.T) string { return testnet.Echo(t).Addr() }

// roundTrip sends a line to addr, half-closes and wants it back whole,
// retrying for a while: routes appear once the connector's tunnel is up.
func roundTrip(t *testing.T, addr string) {
	t.Helper()
	const msg = "through the gateway\n"
	deadline := time.Now().Add(20 * time.Second)
	for {
		got, err := exchange(addr, msg)
		if err == nil && got == msg {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("client at %s: got %q, %v; want %q", addr, got, err, msg)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func exchange(addr, msg string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		return "", err
	}
	c.(*net.TCPConn).CloseWrite()
	b, err := io.ReadAll(c)
	return string(b), err
}
