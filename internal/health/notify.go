package health

import (
	"fmt"
	"net"
	"os"
	"strings"
)

// Notify sends state (such as "READY=1" or "STOPPING=1") to systemd's
// notification socket, named by $NOTIFY_SOCKET, as sd_notify(3) does: one
// datagram to a Unix socket, whose name starts with '@' for one in the
// abstract namespace. Without $NOTIFY_SOCKET (not run by systemd with
// Type=notify) it does nothing and returns nil.
func Notify(state string) error {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}
	if !strings.HasPrefix(path, "/") && !strings.HasPrefix(path, "@") {
		return fmt.Errorf("NOTIFY_SOCKET %q is neither a path nor an abstract socket (@name)", path)
	}
	// Go's net package maps a leading '@' to the abstract namespace.
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("tell systemd %s: %w", state, err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(state)); err != nil {
		return fmt.Errorf("tell systemd %s: %w", state, err)
	}
	return nil
}
