//go:build !linux

package pipe

import "net"

// Without epoll a TCP source has a goroutine of its own.
func tcpReadySource(*net.TCPConn) readySource { return nil }
