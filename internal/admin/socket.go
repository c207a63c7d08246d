package admin

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
)

// SocketFile is the admin socket's name in the edge's data directory.
const SocketFile = "admin.sock"

// SocketError says why the client will not talk to a socket: it is
// missing, or not the edge's.
type SocketError struct {
	Path string
	Msg  string
}

func (e *SocketError) Error() string { return fmt.Sprintf("admin socket %s: %s", e.Path, e.Msg) }

// ListenSocket listens on the admin socket at path, mode 0600, replacing a
// file left there by an edge that did not stop cleanly (the caller holds
// the data directory, so no other edge serves it).
func ListenSocket(path string) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("admin socket %s: a file that is not a socket is in the way; remove it", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("admin socket %s: remove the stale socket: %w", path, err)
		}
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("admin socket %s: %w", path, err)
	}
	return l, nil
}

// DialSocket connects to the edge's admin socket at path, after checking
// that it is the edge's: a socket that only its owner may use (mode 0600,
// owned by this user or, for root, by anyone), served by a process of that
// owner (SO_PEERCRED, where the system has it). A socket that fails a
// check is never written to: the caller's requests may carry secrets.
func DialSocket(ctx context.Context, path string) (net.Conn, error) {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, &SocketError{path, "missing: is the edge running with this data directory? (run this on the edge's host, as its user)"}
	}
	if err != nil {
		return nil, &SocketError{path, err.Error()}
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return nil, &SocketError{path, "not a socket: refusing to talk to it"}
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, &SocketError{path, fmt.Sprintf("mode %#o lets other users in: not the edge's (it makes it 0600); refusing to talk to it", fi.Mode().Perm())}
	}
	owner, ok := fileOwner(fi)
	if ok && owner != os.Geteuid() && os.Geteuid() != 0 {
		return nil, &SocketError{path, fmt.Sprintf("owned by uid %d, not by this user (%d): run this as the edge's user", owner, os.Geteuid())}
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, &SocketError{path, fmt.Sprintf("%v: is the edge running?", err)}
	}
	if ok {
		if peer, known := peerUID(c); known && peer != owner {
			c.Close()
			return nil, &SocketError{path, fmt.Sprintf("served by a process of uid %d, not of its owner (uid %d): refusing to talk to it", peer, owner)}
		}
	}
	return c, nil
}
