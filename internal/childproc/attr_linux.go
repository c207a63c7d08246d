package childproc

import "syscall"

// dieWithParent has the kernel send the child SIGKILL when the parent dies
// (strictly, when the OS thread that started the child ends, which Go does
// only for a goroutine that locked its thread and ended).
func dieWithParent() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
