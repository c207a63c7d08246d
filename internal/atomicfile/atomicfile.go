// Package atomicfile writes files so that a reader, or the next start
// after a crash or a power loss, finds either the old content or the whole
// new one, never a part of it. Every file sallyport writes goes through it.
//
//	err := atomicfile.Write(filepath.Join(dir, "connector.key"), keyPEM, 0o600)
package atomicfile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Write writes data to path with mode perm (umask does not apply), replacing
// any file there at once. See WriteFunc.
func Write(path string, data []byte, perm fs.FileMode) error {
	return WriteFunc(path, perm, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// WriteFunc writes what write writes to path with mode perm (umask does not
// apply), replacing any file there at once: it writes a temporary file in
// the same directory (mode perm before the first byte, so a secret is never
// readable by others, even briefly), syncs it, renames it over path and
// syncs the directory. When write or a step before the rename fails, path
// is as it was and the temporary file is removed. A crash at any point
// leaves path whole, old or new, and at most a temporary file named
// ".<name>.tmp<digits>" beside it. Errors name path.
func WriteFunc(path string, perm fs.FileMode, write func(io.Writer) error) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := fill(f, perm, write); err != nil {
		f.Close()
		os.Remove(f.Name())
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("write %s: %w", path, err)
	}
	// The rename is durable once the directory is: without this a power
	// loss could bring back the old file, or none, after the caller was
	// told that the new one is written.
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("write %s: sync its directory: %w", path, err)
	}
	return nil
}

// fill sets f's mode, writes its content, syncs and closes it.
func fill(f *os.File, perm fs.FileMode, write func(io.Writer) error) error {
	if err := f.Chmod(perm); err != nil {
		return err
	}
	if err := write(f); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	return f.Close()
}

// LoadOrCreate returns the one-line value kept in path (what names it in
// messages), creating it with gen (mode 0600) when the file is missing or
// empty: ids and tokens that a process keeps across restarts live this way.
func LoadOrCreate(path, what string, gen func() string) (string, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		if v := strings.TrimSpace(string(b)); v != "" {
			return v, nil
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("read %s: %w", what, err)
	}
	v := gen()
	if err := Write(path, []byte(v+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write %s: %w", what, err)
	}
	return v, nil
}
