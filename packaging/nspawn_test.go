package packaging_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/childproc"
	"github.com/sallyport/sallyport/internal/logbuf"
)

// nspawnRootEnv names a Debian tree to boot the units in, made once with
//
//	debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,procps bookworm DIR
//
// (about 150 MB from Debian's mirror). This machine and CI run no systemd
// as PID 1, so without it the units are checked by systemd-analyze and
// their ExecStart run by hand (units_test.go), not started by systemd.
const nspawnRootEnv = "SALLYPORT_NSPAWN_ROOT"

// The units under a real systemd, PID 1 of a systemd-nspawn container
// sharing this machine's network: the hardened edge starts (Type=notify,
// its http listener on port 80 with CAP_NET_BIND_SERVICE alone), the
// connector enrolls as the sallyport user and carries a client's bytes
// to a back-end on this machine, and `systemctl stop` ends both cleanly.
// The container's root is a throwaway overlay over the tree.
func TestUnitsUnderSystemd(t *testing.T) {
	tree := os.Getenv(nspawnRootEnv)
	if tree == "" {
		t.Skipf("%s is not set: no Debian tree to boot the units in (see nspawnRootEnv)", nspawnRootEnv)
	}
	nspawn := requireTool(t, "systemd-nspawn")
	// /etc/sallyport, bound from here: readable by all, as the user the
	// units run as has a group only inside the container.
	etc := t.TempDir()
	if err := os.Chmod(etc, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(t *testing.T, path, data string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tunnelPort, adminPort, echoPort, httpPort := freePort(t), freePort(t), freePort(t), 80
	write(t, filepath.Join(etc, "edge.yaml"), fmt.Sprintf(`tunnel:
  listen: 127.0.0.1:%d
  advertise: [127.0.0.1:%d]
admin:
  listen: 127.0.0.1:%d
services:
  echo: {listen: "127.0.0.1:%d"}
listeners:
  - {kind: http, listen: "127.0.0.1:%d"}
`, tunnelPort, tunnelPort, adminPort, echoPort, httpPort))
	args := []string{"--quiet", "--register=no", "--keep-unit", "--volatile=overlay", "-D", tree, "-b", "--console=pipe",
		"--bind-ro=" + bin + ":/usr/bin/sallyport",
		"--bind-ro=" + etc + ":/etc/sallyport",
		"--bind-ro=" + abs(t, "systemd/sallyport.sysusers") + ":/usr/lib/sysusers.d/sallyport.conf"}
	for _, role := range roles {
		args = append(args, "--bind-ro="+abs(t, unitPath(role))+":/etc/systemd/system/sallyport-"+role+".service")
	}
	cmd := exec.Command(nspawn, args...)
	var out logbuf.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	boot, err := childproc.Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	pid1 := 0
	in := func(argv ...string) (string, error) {
		b, err := exec.Command("nsenter", append([]string{"-t", fmt.Sprint(pid1), "-a"}, argv...)...).CombinedOutput()
		return strings.TrimSpace(string(b)), err
	}
	t.Cleanup(func() {
		if pid1 != 0 {
			in("systemctl", "poweroff")
		}
		if boot.Wait(30*time.Second) != nil {
			boot.Kill()
		}
		if t.Failed() {
			t.Logf("systemd-nspawn output:\n%s", out.String())
		}
	})
	// The container's systemd is nspawn's child; wait until it is up.
	deadline := time.Now().Add(60 * time.Second)
	for {
		if pid1 == 0 {
			if b, err := exec.Command("pgrep", "-P", fmt.Sprint(boot.Pid()), "-x", "systemd").Output(); err == nil {
				fmt.Sscan(string(b), &pid1)
			}
		}
		if pid1 != 0 {
			if state, _ := in("systemctl", "is-system-running"); state == "running" || state == "degraded" {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the container's systemd is not up after 60 s (pid %d)", pid1)
		}
		time.Sleep(200 * time.Millisecond)
	}
	must := func(argv ...string) string {
		t.Helper()
		o, err := in(argv...)
		if err != nil {
			journal, _ := in("journalctl", "--no-pager", "-n", "40", "-u", "sallyport-edge", "-u", "sallyport-connector")
			t.Fatalf("%s: %v\n%s\njournal:\n%s", strings.Join(argv, " "), err, o, journal)
		}
		return o
	}
	must("systemctl", "start", "sallyport-edge")
	if o := must("sallyport", "health"); o != "ok" {
		t.Fatalf("sallyport health in the container: %q", o)
	}
	kf := must("sallyport", "token", "create", "--name", "site-a", "--service", "echo", "-o", "-")
	write(t, filepath.Join(etc, "connector.keyfile"), kf)
	write(t, filepath.Join(etc, "connector.yaml"), fmt.Sprintf("keyfile: /etc/sallyport/connector.keyfile\nservices:\n  echo: {address: %s}\n", echo(t)))
	must("systemctl", "start", "sallyport-connector")
	roundTrip(t, fmt.Sprintf("127.0.0.1:%d", echoPort))
	if o := must("stat", "-c", "%U %a", "/var/lib/sallyport/connector"); o != "sallyport 700" {
		t.Errorf("the connector's state directory: %q, want sallyport's, mode 700", o)
	}

	must("systemctl", "stop", "sallyport-connector", "sallyport-edge")
	for _, role := range roles {
		if o := must("systemctl", "show", "-p", "Result", "-p", "ExecMainStatus", "sallyport-"+role); o != "Result=success\nExecMainStatus=0" {
			t.Errorf("%s after systemctl stop: %q", role, o)
		}
	}
}

func abs(t *testing.T, path string) string {
	t.Helper()
	p, err := filepath.Abs(path)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
