//go:build !unix

package pipe

import "net"

// tcpWaiter: without a way to peek, a TCP reader holds its buffer.
func tcpWaiter(*net.TCPConn) func() { return nil }
