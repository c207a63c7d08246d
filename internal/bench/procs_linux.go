package bench

import "syscall"

// childAttr makes a child die with the benchmark (SIGKILL), should the
// benchmark die without its cleanup running.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
