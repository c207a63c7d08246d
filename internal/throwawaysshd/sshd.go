// Package throwawaysshd prepares an OpenSSH server that touches nothing of
// the system's own: its config file, host key and the one client key it
// accepts all live in a directory of the caller's. The namespace tests
// reach it as a real SSH back-end; the benchmark runs OpenSSH's remote
// forwarding through it as the peer sallyport is compared with.
//
//	s, err := throwawaysshd.Prepare(dir, "127.0.0.1", port, "Ciphers aes128-gcm@openssh.com")
//	// run s.Command() (sshd -D -e -f dir/sshd_config), then log in with
//	// ssh -i s.ClientKey -p port
package throwawaysshd

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Server is a prepared sshd: run Command.
type Server struct {
	// Bin is the sshd binary; Config its config file.
	Bin, Config string
	// ClientKey is the private key file the server accepts a login with
	// (as any user it can log in as: root, when run as root).
	ClientKey string
}

// Command returns sshd's arguments: in the foreground, logging to stderr.
func (s *Server) Command() []string { return []string{s.Bin, "-D", "-e", "-f", s.Config} }

// Prepare writes a host key, a client key, an authorized_keys file and a
// config file into dir for an sshd that listens on listen:port, with
// extra config lines appended. It creates /run/sshd, the privilege
// separation directory sshd requires and its package would create at boot,
// when running as root.
func Prepare(dir, listen string, port int, extra ...string) (*Server, error) {
	bin, err := Look("sshd")
	if err != nil {
		return nil, err
	}
	keygen, err := Look("ssh-keygen")
	if err != nil {
		return nil, err
	}
	hostKey, clientKey := filepath.Join(dir, "host_ed25519"), filepath.Join(dir, "client_ed25519")
	for _, k := range []string{hostKey, clientKey} {
		if out, err := exec.Command(keygen, "-q", "-t", "ed25519", "-N", "", "-C", "sallyport-throwaway", "-f", k).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("ssh-keygen: %v: %s", err, out)
		}
	}
	pub, err := os.ReadFile(clientKey + ".pub")
	if err != nil {
		return nil, err
	}
	authorized := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(authorized, pub, 0o600); err != nil {
		return nil, err
	}
	config := fmt.Sprintf(`Port %d
ListenAddress %s
HostKey %s
AuthorizedKeysFile %s
PidFile none
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
%s
`, port, listen, hostKey, authorized, strings.Join(extra, "\n"))
	cfg := filepath.Join(dir, "sshd_config")
	if err := os.WriteFile(cfg, []byte(config), 0o600); err != nil {
		return nil, err
	}
	if os.Geteuid() == 0 {
		if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
			return nil, fmt.Errorf("sshd's privilege separation directory: %w", err)
		}
	}
	return &Server{Bin: bin, Config: cfg, ClientKey: clientKey}, nil
}

// Look finds an OpenSSH binary on PATH or in the sbin directories, where
// sshd lives and an ordinary user's PATH often does not reach.
func Look(bin string) (string, error) {
	if p, err := exec.LookPath(bin); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/sbin", "/sbin", "/usr/local/sbin"} {
		if p, err := exec.LookPath(filepath.Join(d, bin)); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("OpenSSH's %s is not installed (Debian: openssh-server, openssh-client)", bin)
}
