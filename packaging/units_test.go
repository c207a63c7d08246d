package packaging_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/childproc/childproctest"
	"github.com/sallyport/sallyport/internal/pki"
)

// execStart returns the argv the unit's ExecStart runs, as systemd builds
// it: ${VAR} from env (a variable the test does not set fails it), the
// binary and /etc/sallyport moved to where the test has them.
func execStart(t *testing.T, role string, env map[string]string, etc string) []string {
	t.Helper()
	line, ok := readUnit(t, unitPath(role)).get("Service", "ExecStart")
	if !ok {
		t.Fatalf("%s: no ExecStart", unitPath(role))
	}
	if strings.ContainsAny(line, `"'\%`) {
		t.Fatalf("%s: ExecStart=%q uses quoting or specifiers this test does not expand", unitPath(role), line)
	}
	line = os.Expand(line, func(k string) string {
		v, ok := env[k]
		if !ok {
			t.Fatalf("%s: ExecStart names $%s, which systemd does not set for this unit", unitPath(role), k)
		}
		return v
	})
	args := strings.Fields(strings.ReplaceAll(line, "/etc/sallyport/", etc+"/"))
	if args[0] != "/usr/bin/sallyport" {
		t.Fatalf("%s: ExecStart runs %s", unitPath(role), args[0])
	}
	return args[1:]
}

// unitEnv is the environment systemd gives the unit of role: the
// directories it creates (StateDirectory, ConfigurationDirectory), under
// root, and its notify socket.
func unitEnv(t *testing.T, root, role string, sd *notifySocket) (map[string]string, []string) {
	t.Helper()
	m := map[string]string{
		"STATE_DIRECTORY":         filepath.Join(root, "var/lib/sallyport", role),
		"CONFIGURATION_DIRECTORY": filepath.Join(root, "etc/sallyport"),
	}
	if err := os.MkdirAll(m["STATE_DIRECTORY"], 0o700); err != nil {
		t.Fatal(err)
	}
	var env []string
	for k, v := range m {
		env = append(env, k+"="+v)
	}
	return m, append(env, "NOTIFY_SOCKET="+sd.path)
}

// The units' command lines are real: the edge and the connector run with
// exactly the flags and environment their ExecStart gives them (the
// directories systemd makes, a notify socket playing systemd), tell
// systemd READY=1, carry a client's bytes to a back-end, and on SIGTERM
// (systemctl stop) say STOPPING=1 and exit 0. systemd itself cannot run
// them here: it is not PID 1 in this machine.
func TestUnitsRunAsWritten(t *testing.T) {
	root := t.TempDir()
	etc := filepath.Join(root, "etc/sallyport")
	if err := os.MkdirAll(etc, 0o750); err != nil {
		t.Fatal(err)
	}
	tunnelPort, echoPort := freePort(t), freePort(t)
	write(t, filepath.Join(etc, "edge.yaml"), fmt.Sprintf(`tunnel:
  listen: 127.0.0.1:%d
  advertise: [127.0.0.1:%d]
admin:
  listen: 127.0.0.1:0
services:
  echo:
    listen: 127.0.0.1:%d
`, tunnelPort, tunnelPort, echoPort))

	edgeSD := listenNotify(t)
	edgeVars, edgeEnv := unitEnv(t, root, "edge", edgeSD)
	edge := start(t, "edge", edgeEnv, execStart(t, "edge", edgeVars, etc)...)
	if got := edgeSD.next(t); got != "READY=1" {
		t.Fatalf("edge's first notification %q, want READY=1", got)
	}
	data := edgeVars["STATE_DIRECTORY"]
	if code, out, _ := sallyport(t, "health", "--data", data); code != 0 || out != "ok\n" {
		t.Fatalf("sallyport health on the unit's state directory: exit %d, %q", code, out)
	}
	keyfile := filepath.Join(etc, "connector.keyfile")
	if code, out, errOut := sallyport(t, "token", "create", "--data", data, "--name", "site", "--service", "echo", "-o", keyfile); code != 0 {
		t.Fatalf("token create: exit %d\n%s%s", code, out, errOut)
	}
	write(t, filepath.Join(etc, "connector.yaml"), fmt.Sprintf(`keyfile: %s
services:
  echo:
    address: %s
`, keyfile, echo(t)))

	connSD := listenNotify(t)
	connVars, connEnv := unitEnv(t, root, "connector", connSD)
	conn := start(t, "connector", connEnv, execStart(t, "connector", connVars, etc)...)
	if got := connSD.next(t); got != "READY=1" {
		t.Fatalf("connector's first notification %q, want READY=1", got)
	}
	roundTrip(t, fmt.Sprintf("127.0.0.1:%d", echoPort))
	if _, err := os.Stat(filepath.Join(connVars["STATE_DIRECTORY"], pki.ConnectorCertFile)); err != nil {
		t.Errorf("the connector kept no identity in its state directory: %v", err)
	}

	for _, p := range []struct {
		proc *childproctest.Proc
		sd   *notifySocket
	}{{conn, connSD}, {edge, edgeSD}} {
		if err := p.proc.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if got := p.sd.next(t); got != "STOPPING=1" {
			t.Fatalf("%s's notification at stop %q, want STOPPING=1", p.proc.Name, got)
		}
		if err := p.proc.Wait(40 * time.Second); err != nil || p.proc.ExitCode() != 0 {
			t.Fatalf("%s after SIGTERM: %v, exit %d", p.proc.Name, err, p.proc.ExitCode())
		}
	}
}

func write(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o640); err != nil {
		t.Fatal(err)
	}
}
