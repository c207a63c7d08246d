//go:build !linux

package bench

import "syscall"

// childAttr: without Pdeathsig, children are stopped by the benchmark's
// cleanup only.
func childAttr() *syscall.SysProcAttr { return nil }

func bindNoPort(_, _ string, _ syscall.RawConn) error { return nil }
