//go:build !linux

package childproc

import "syscall"

// dieWithParent: without Pdeathsig, a child outlives a parent that dies
// without stopping it.
func dieWithParent() *syscall.SysProcAttr { return nil }
