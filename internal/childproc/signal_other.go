//go:build !unix

package childproc

import "os"

// terminate: Windows cannot deliver SIGTERM, so Stop kills at once.
func terminate() os.Signal { return os.Kill }
