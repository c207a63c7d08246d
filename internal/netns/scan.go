//go:build linux

package netns

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"golang.org/x/sys/unix"
)

// scanBatch is how many connection attempts a port scan has in flight.
const scanBatch = 512

// ScanPorts tries a TCP connection from the namespace to every port of
// addr, 1 to 65535, as a port scanner would, and returns the ports that
// accepted one, and those that gave no answer within timeout or failed
// otherwise than refused (a firewall dropping them, say): a scan with
// unanswered ports has not seen what listens there. Accepted connections
// are reset at once. Refusals come back at once, so a scan of a host
// that answers every port takes a second or two.
func (n *Namespace) ScanPorts(addr netip.Addr, timeout time.Duration) (open, unanswered []int, err error) {
	if !addr.Is4() {
		return nil, nil, fmt.Errorf("scan %s: only IPv4 addresses", addr)
	}
	err = n.Do(func() error {
		for first := 1; first <= 65535; first += scanBatch {
			last := min(first+scanBatch-1, 65535)
			o, u, err := scanRange(addr, first, last, timeout)
			if err != nil {
				return err
			}
			open, unanswered = append(open, o...), append(unanswered, u...)
		}
		return nil
	})
	slices.Sort(open)
	slices.Sort(unanswered)
	return open, unanswered, err
}

// scanRange tries ports first to last of addr at once, with non-blocking
// connects from the calling thread's namespace, and waits up to timeout
// for their answers.
func scanRange(addr netip.Addr, first, last int, timeout time.Duration) (open, unanswered []int, err error) {
	// In flight: ports[i] is the port of the connect on fds[i].Fd; an
	// answered one's Fd is made negative, which poll skips.
	var ports []int
	var fds []unix.PollFd
	defer func() {
		for _, f := range fds {
			unix.Close(int(max(f.Fd, ^f.Fd)))
		}
	}()
	for port := first; port <= last; port++ {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return nil, nil, fmt.Errorf("scan: open a socket: %w", err)
		}
		// Closing sends a reset, and leaves no TIME_WAIT behind.
		unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
		switch err := unix.Connect(fd, &unix.SockaddrInet4{Port: port, Addr: addr.As4()}); {
		case err == nil:
			open = append(open, port)
			unix.Close(fd)
		case errors.Is(err, unix.ECONNREFUSED):
			unix.Close(fd)
		case errors.Is(err, unix.EINPROGRESS):
			ports = append(ports, port)
			fds = append(fds, unix.PollFd{Fd: int32(fd), Events: unix.POLLOUT})
		default:
			unix.Close(fd)
			return nil, nil, fmt.Errorf("scan: connect to port %d: %w", port, err)
		}
	}
	deadline := time.Now().Add(timeout)
	for waiting := len(fds); waiting > 0; {
		left := time.Until(deadline)
		if left <= 0 {
			break
		}
		if _, err := unix.Poll(fds, int(left.Milliseconds())+1); err != nil && !errors.Is(err, unix.EINTR) {
			return nil, nil, fmt.Errorf("scan: poll: %w", err)
		}
		for i := range fds {
			if fds[i].Fd < 0 || fds[i].Revents == 0 {
				continue
			}
			waiting--
			switch soErr, err := unix.GetsockoptInt(int(fds[i].Fd), unix.SOL_SOCKET, unix.SO_ERROR); {
			case err != nil:
				return nil, nil, fmt.Errorf("scan: read the outcome for port %d: %w", ports[i], err)
			case soErr == 0:
				open = append(open, ports[i])
			case unix.Errno(soErr) != unix.ECONNREFUSED:
				unanswered = append(unanswered, ports[i])
			}
			fds[i].Fd = ^fds[i].Fd
		}
	}
	for i := range fds {
		if fds[i].Fd >= 0 {
			unanswered = append(unanswered, ports[i])
		}
	}
	return open, unanswered, nil
}
