//go:build !linux

package traffic

import "syscall"

func bindNoPort(_, _ string, _ syscall.RawConn) error { return nil }
