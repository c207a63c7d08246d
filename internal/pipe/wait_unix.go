//go:build unix

package pipe

import (
	"net"
	"syscall"
)

// tcpWaiter returns a function that blocks until c has bytes to read (or
// its end of stream, or an error), without a buffer: it peeks one byte,
// and while there is none it waits on the runtime's poller.
func tcpWaiter(c *net.TCPConn) func() {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil
	}
	var b [1]byte
	ready := func(fd uintptr) bool {
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return err != syscall.EAGAIN && err != syscall.EINTR
	}
	return func() {
		// An error (a closed connection) is returned again by the Read
		// that follows.
		rc.Read(ready)
	}
}
