//go:build !linux

package pipe

import "net"

// Without epoll every direction has a goroutine of its own.
type watch struct{}

func (j *joint) watch(dst, src net.Conn, count *int64) *watch { return nil }
func (w *watch) arm()                                         {}
func (w *watch) abort()                                       {}
func watchedJoint(net.Conn) *joint                            { return nil }
