package packaging_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// podmanRunFlags are what podman needs on top of the image's own
// settings on machines like CI's: runc, because crun refuses a host with
// cgroups in hybrid mode ("cgroups in hybrid mode not supported, drop all
// controllers from cgroupv2"); file and process limits no higher than the
// host's, because the runtime's default (1048576 open files) cannot be set
// without CAP_SYS_RESOURCE; and no health-check timer, which podman would
// ask systemd for (the test runs the check itself).
var podmanRunFlags = []string{"--runtime", "runc", "--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096", "--health-interval", "disable"}

// podman runs podman with args and returns its trimmed standard output,
// failing the test with its error output if it fails.
func podman(t *testing.T, args ...string) string {
	t.Helper()
	out, err := podmanTry(args...)
	if err != nil {
		t.Fatalf("podman %s: %v", strings.Join(args, " "), err)
	}
	return out
}

func podmanTry(args ...string) (string, error) {
	var o, e strings.Builder
	cmd := exec.Command("podman", args...)
	cmd.Stdout, cmd.Stderr = &o, &e
	if err := cmd.Run(); err != nil {
		return o.String(), fmt.Errorf("%w: %s", err, strings.TrimSpace(e.String()))
	}
	return strings.TrimSpace(o.String()), nil
}

// The image as the README builds it: the static binary on an empty base,
// as user 65532, its health check `sallyport health`. The edge runs in it
// with its data directory on a host directory and its ports on the
// host's loopback; a connector on the host enrolls with a keyfile made inside
// the container, and a client on the host reaches a back-end on the host
// through the edge in the container.
func TestContainerImage(t *testing.T) {
	requireTool(t, "podman")
	requireTool(t, "runc")
	if os.Geteuid() != 0 {
		t.Skip("rootful podman: needs root")
	}
	// The build context: the recipe and the binary next to it, as the
	// README's build command leaves them.
	ctxDir := t.TempDir()
	recipe, err := os.ReadFile(filepath.Join("container", "Containerfile"))
	if err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(ctxDir, "Containerfile"), string(recipe))
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ctxDir, "sallyport"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	tag := fmt.Sprintf("localhost/sallyport-test:%d", time.Now().UnixNano())
	podman(t, "build", "--quiet", "--format", "docker", "--tag", tag, ctxDir)
	image := podman(t, "image", "inspect", "--format", "{{.Id}}", tag)
	t.Cleanup(func() { podmanTry("rmi", "--force", image) })

	if got := podman(t, "image", "inspect", "--format", "{{.Config.User}} {{json .Config.Entrypoint}} {{json .Config.Healthcheck.Test}}", image); got != `65532:65532 ["/sallyport"] ["CMD","/sallyport","health","--data","/data"]` {
		t.Errorf("image config: %s", got)
	}

	data := t.TempDir()
	if err := os.Chown(data, 65532, 65532); err != nil {
		t.Fatal(err)
	}
	// The host's network, on loopback ports of the test's choosing:
	// podman's default bridge would put a 10.88.0.0/16 network and NAT
	// rules on the host, outside the addresses tests may use.
	tunnelPort, echoPort, adminPort := freePort(t), freePort(t), freePort(t)
	args := append([]string{"run", "--detach", "--volume", data + ":/data", "--network", "host"}, podmanRunFlags...)
	args = append(args, image, "edge", "--data", "/data",
		"--tunnel-listen", fmt.Sprintf("127.0.0.1:%d", tunnelPort), "--advertise", fmt.Sprintf("127.0.0.1:%d", tunnelPort),
		"--admin-listen", fmt.Sprintf("127.0.0.1:%d", adminPort), "--expose", fmt.Sprintf("echo=127.0.0.1:%d", echoPort))
	id, err := podmanTry(args...)
	if id != "" {
		id = strings.TrimSpace(id)
		t.Cleanup(func() {
			if t.Failed() {
				logs, _ := podmanTry("logs", id)
				t.Logf("container %s logs:\n%s", id, logs)
			}
			podmanTry("rm", "--force", "--time", "0", id)
		})
	}
	if err != nil {
		t.Fatalf("podman run: %v", err)
	}

	// The image's health check turns healthy once the edge is ready.
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := podmanTry("healthcheck", "run", id)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("podman healthcheck run: still failing after 30 s: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if got := podman(t, "top", id, "user"); !strings.Contains(got, "65532") {
		t.Errorf("the edge in the container does not run as 65532: %q", got)
	}

	keyfile := filepath.Join(t.TempDir(), "site.keyfile")
	kf := podman(t, "exec", id, "/sallyport", "token", "create", "--data", "/data", "--name", "site", "--service", "echo", "-o", "-")
	write(t, keyfile, kf)
	start(t, "connector", nil, "connector", "--keyfile", keyfile, "--data", t.TempDir(), "--proxy", "direct", "--service", "echo="+echo(t))
	roundTrip(t, fmt.Sprintf("127.0.0.1:%d", echoPort))

	// The edge's state is on the host, owned by the container's user.
	fi, err := os.Stat(filepath.Join(data, "admin.token"))
	if err != nil {
		t.Fatalf("the edge kept no state in the mounted /data: %v", err)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); !ok || st.Uid != 65532 || fi.Mode().Perm() != 0o600 {
		t.Errorf("admin.token in the mounted /data: mode %v, owner %v; want 0600 owned by 65532", fi.Mode().Perm(), fi.Sys())
	}
}
