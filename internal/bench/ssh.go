package bench

import (
	"context"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/sallyport/sallyport/internal/throwawaysshd"
)

// The peer: OpenSSH's remote forwarding (ssh -R), the tool sallyport
// replaces, set up the same way: sshd plays the edge (it listens for the
// clients), ssh the connector (it dials out to sshd and on to the
// back-ends). Both use aes128-gcm@openssh.com, the cipher OpenSSH is
// fastest with on a machine with AES instructions, as sallyport's TLS
// uses AES-128-GCM. Everything is throwaway: a temporary sshd on
// loopback with its own config, host key and authorized key; nothing on
// the system is read or changed but /run/sshd, the privilege separation
// directory sshd insists on, created if missing as the package would.

// sshCipher is the cipher both ends are held to.
const sshCipher = "aes128-gcm@openssh.com"

// sshPeer is the throwaway sshd and the ssh client forwarding through it.
type sshPeer struct {
	sshd, ssh *proc
	// public maps each service to sshd's forwarded address for it.
	public map[string]string
}

// startSSH starts sshd on a free loopback port and an ssh client that
// forwards a new sshd port to each of backends, and waits until a round
// trip on probe passes.
func startSSH(ctx context.Context, dir string, backends map[string]string, probe string) (*sshPeer, error) {
	sshBin, err := throwawaysshd.Look("ssh")
	if err != nil {
		return nil, fmt.Errorf("--compare ssh: %w", err)
	}
	dir = filepath.Join(dir, "ssh")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("ssh peer: %w", err)
	}
	names := make([]string, 0, len(backends))
	for n := range backends {
		names = append(names, n)
	}
	ports, err := freePorts(1 + len(names))
	if err != nil {
		return nil, err
	}
	srv, err := throwawaysshd.Prepare(dir, "127.0.0.1", ports[0], "AllowTcpForwarding remote", "GatewayPorts no",
		"Ciphers "+sshCipher, "Compression no", "LogLevel ERROR")
	if err != nil {
		return nil, fmt.Errorf("--compare ssh: %w", err)
	}
	p := &sshPeer{public: map[string]string{}}
	if p.sshd, err = startProc(srv.Command()[0], dir, "sshd", srv.Command()[1:]...); err != nil {
		return nil, err
	}
	me, err := user.Current()
	if err != nil {
		p.stop()
		return nil, fmt.Errorf("ssh peer: who am I: %w", err)
	}
	args := []string{"-N", "-T", "-F", "/dev/null", "-i", srv.ClientKey, "-p", strconv.Itoa(ports[0]),
		"-c", sshCipher, "-o", "Compression=no", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
		"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "ExitOnForwardFailure=yes",
		"-o", "ServerAliveInterval=15", "-o", "LogLevel=ERROR"}
	for i, n := range names {
		p.public[n] = "127.0.0.1:" + strconv.Itoa(ports[1+i])
		args = append(args, "-R", p.public[n]+":"+backends[n])
	}
	args = append(args, me.Username+"@127.0.0.1")
	// sshd may not be listening yet: ssh is retried until it forwards.
	deadline := time.Now().Add(30 * time.Second)
	var last error
	for {
		if p.ssh, err = startProc(sshBin, dir, "ssh", args...); err != nil {
			p.stop()
			return nil, err
		}
		for time.Now().Before(deadline) && ctx.Err() == nil && !p.ssh.Exited() {
			if last = roundTrip(local, p.public[probe]); last == nil {
				return p, nil
			}
			time.Sleep(100 * time.Millisecond)
		}
		if p.sshd.Exited() || !time.Now().Before(deadline) || ctx.Err() != nil {
			p.stop()
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("ssh peer: no round trip through ssh -R within 30s (last: %v); sshd log:\n%s\nssh log:\n%s",
				last, p.sshd.tail(), p.ssh.tail())
		}
		p.ssh.stop()
		time.Sleep(100 * time.Millisecond)
	}
}

// cpu returns the CPU seconds used by ssh and by sshd with every process
// it started for the session (OpenSSH splits a session in a privileged
// monitor and an unprivileged child).
func (p *sshPeer) cpu() (float64, error) {
	total, err := cpuSeconds(p.ssh.Pid())
	if err != nil {
		return 0, err
	}
	for _, pid := range append([]int{p.sshd.Pid()}, descendants(p.sshd.Pid())...) {
		s, err := cpuSeconds(pid)
		if err != nil {
			continue // a child that ended in between
		}
		total += s
	}
	return total, nil
}

// alive returns an error naming a process that has died.
func (p *sshPeer) alive() error {
	for _, q := range []*proc{p.sshd, p.ssh} {
		if q.Exited() {
			return fmt.Errorf("the peer's %s (pid %d) exited during the run; its log:\n%s", q.name, q.Pid(), q.tail())
		}
	}
	return nil
}

// stop kills ssh and sshd (and so the session processes) by PID.
func (p *sshPeer) stop() {
	for _, q := range []*proc{p.ssh, p.sshd} {
		if q != nil {
			q.stop()
		}
	}
}

// descendants returns the process ids below pid, read from /proc.
func descendants(pid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	children := map[int][]int{}
	for _, e := range entries {
		id, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// Fields after the command name's closing parenthesis: state, ppid.
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) < 2 {
			continue
		}
		if ppid, err := strconv.Atoi(f[1]); err == nil {
			children[ppid] = append(children[ppid], id)
		}
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		next := children[queue[0]]
		queue = queue[1:]
		out = append(out, next...)
		queue = append(queue, next...)
	}
	return out
}
