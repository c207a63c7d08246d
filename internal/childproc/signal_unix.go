//go:build unix

package childproc

import (
	"os"
	"syscall"
)

// terminate is the signal that asks a process to end.
func terminate() os.Signal { return syscall.SIGTERM }
