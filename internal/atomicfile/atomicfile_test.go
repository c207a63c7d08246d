package atomicfile_test

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/atomicfile"
)

// entries returns the names in dir.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, de := range des {
		names = append(names, de.Name())
	}
	return names
}

func TestWriteCreatesAndReplaces(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "connector.key")
	for _, content := range []string{"first\n", "second, longer than the first\n", ""} {
		if err := atomicfile.Write(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != content {
			t.Errorf("file holds %q, want %q", got, content)
		}
	}
	if names := entries(t, dir); len(names) != 1 {
		t.Errorf("directory holds %q, want only connector.key", names)
	}
}

func TestWriteSetsTheModeAsked(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("Windows has no Unix permission bits")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	// A mode wider than the umask allows, then a secret's mode over a file
	// that was readable by all: each write leaves exactly the mode asked.
	for _, perm := range []fs.FileMode{0o666, 0o600, 0o644} {
		if err := atomicfile.Write(path, []byte("x"), perm); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != perm {
			t.Errorf("mode %v after writing with %v", got, perm)
		}
	}
}

func TestFailedWriteLeavesTheOldFileAndNoTemporary(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "edges.json")
	if err := atomicfile.Write(path, []byte(`["old:5500"]`), 0o600); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("disk on fire")
	err := atomicfile.WriteFunc(path, 0o600, func(w io.Writer) error {
		w.Write([]byte(`["new:55`)) // half of the new content, then a failure
		return boom
	})
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), path) {
		t.Errorf("error %v, want one that wraps the writer's and names %s", err, path)
	}
	got, _ := os.ReadFile(path)
	if string(got) != `["old:5500"]` {
		t.Errorf("after a failed write the file holds %q, want the old content", got)
	}
	if names := entries(t, dir); len(names) != 1 {
		t.Errorf("directory holds %q after a failed write, want only edges.json", names)
	}
}

func TestFailedRenameRemovesTheTemporary(t *testing.T) {
	dir := t.TempDir()
	// A directory where the file should go: everything works up to the
	// rename, which fails.
	path := filepath.Join(dir, "keyfile")
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := atomicfile.Write(path, []byte("secret"), 0o600); err == nil {
		t.Fatal("writing over a directory succeeded")
	}
	if names := entries(t, dir); len(names) != 1 || names[0] != "keyfile" {
		t.Errorf("directory holds %q after a failed rename, want only keyfile", names)
	}
}

func TestWriteIntoAMissingDirectoryNamesThePath(t *testing.T) {
	path := filepath.Join(t.TempDir(), "no-such-dir", "f")
	err := atomicfile.Write(path, []byte("x"), 0o600)
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), path) {
		t.Errorf("error %v, want one that is fs.ErrNotExist and names %s", err, path)
	}
}

// crashEnv names the file a child process writes until it is killed.
const crashEnv = "ATOMICFILE_TEST_CRASH_PATH"

// TestCrashLeavesTheOldFileWhole kills a process (SIGKILL) while it is in
// the middle of replacing a file: the file still holds the old content,
// whole, as the next start of a program would read it.
func TestCrashLeavesTheOldFileWhole(t *testing.T) {
	if path := os.Getenv(crashEnv); path != "" {
		crashingWriter(path)
		return
	}
	if runtime.GOOS == "windows" {
		t.Skip("needs a process to kill mid-write")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "connector.crt")
	old := bytes.Repeat([]byte("old certificate\n"), 1000)
	if err := atomicfile.Write(path, old, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashLeavesTheOldFileWhole$")
	cmd.Env = append(os.Environ(), crashEnv+"="+path)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	// The child says "half" once half the new content is written (and
	// synced, so it is on disk, not only in the child's memory).
	line, err := bufio.NewReader(out).ReadString('\n')
	if line != "half\n" {
		t.Fatalf("child said %q, %v; want half", line, err)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, old) {
		t.Errorf("after a crash mid-write the file holds %d bytes starting %q, want the old %d bytes", len(got), got[:min(len(got), 20)], len(old))
	}
}

// crashingWriter replaces path with new content, stopping for good in
// the middle.
func crashingWriter(path string) {
	atomicfile.WriteFunc(path, 0o644, func(w io.Writer) error {
		w.Write(bytes.Repeat([]byte("new certificate\n"), 500))
		w.(*os.File).Sync()
		os.Stdout.WriteString("half\n")
		time.Sleep(time.Hour) // killed here
		return nil
	})
	os.Exit(3) // unreachable unless the parent failed to kill
}
