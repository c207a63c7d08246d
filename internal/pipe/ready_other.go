//go:build !unix

package pipe

import "net"

// Without raw reads, a TCP source has a goroutine of its own.
func tcpReadySource(*net.TCPConn, func()) readySource { return nil }
