//go:build !unix

package atomicfile

// syncDir does nothing where a directory cannot be opened for syncing
// (Windows): the rename itself is as durable as the system makes it.
func syncDir(string) error { return nil }
