//go:build unix

package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// lockDir takes an exclusive advisory lock on dir/store.lock, so that two
// processes (or two stores in one process) never share one JetStream
// directory: the file store has no lock of its own and would be corrupted.
// The returned file holds the lock until it is closed.
func lockDir(dir string) (*os.File, error) {
	path := filepath.Join(dir, "store.lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open store: lock data directory: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("open store: data directory %s is in use by another sallyport edge; stop it or choose another directory", dir)
		}
		return nil, fmt.Errorf("open store: lock %s: %w", path, err)
	}
	return f, nil
}
