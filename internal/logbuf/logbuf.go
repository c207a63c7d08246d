// Package logbuf keeps what a process or a logger writes, line by line, for
// tests that assert what an operator would read.
//
//	var logs logbuf.Buffer
//	log := slog.New(slog.NewTextHandler(&logs, nil))
//	... // run something that logs through log
//	logs.WaitFor(t, 5*time.Second, 1, "connector enrolled", logbuf.Field("name", "site-a"))
package logbuf

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"
)

// Buffer is an io.Writer that keeps everything written to it. Its zero
// value is empty and ready to use; it is safe for concurrent use.
type Buffer struct {
	// mu guards buf: loggers and child-process copiers write while the
	// test reads.
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Mark returns a position in the buffer: LinesSince(Mark(), ...) sees only
// lines written after it.
func (b *Buffer) Mark() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Len()
}

// Lines returns the lines that contain every one of subs.
func (b *Buffer) Lines(subs ...string) []string { return b.LinesSince(0, subs...) }

// LinesSince returns the lines after mark that contain every one of subs.
func (b *Buffer) LinesSince(mark int, subs ...string) []string {
	b.mu.Lock()
	text := string(b.buf.Bytes()[mark:])
	b.mu.Unlock()
	var out []string
	for line := range strings.SplitSeq(text, "\n") {
		if line != "" && containsAll(line, subs) {
			out = append(out, line)
		}
	}
	return out
}

// Count returns how many lines contain every one of subs.
func (b *Buffer) Count(subs ...string) int { return len(b.Lines(subs...)) }

// WaitFor waits until at least n lines contain every one of subs and
// returns how long that took, or fails the test after timeout.
func (b *Buffer) WaitFor(t testing.TB, timeout time.Duration, n int, subs ...string) time.Duration {
	t.Helper()
	return b.WaitForSince(t, 0, timeout, n, subs...)
}

// WaitForSince is WaitFor counting only the lines after mark.
func (b *Buffer) WaitForSince(t testing.TB, mark int, timeout time.Duration, n int, subs ...string) time.Duration {
	t.Helper()
	start := time.Now()
	for len(b.LinesSince(mark, subs...)) < n {
		if time.Since(start) > timeout {
			t.Fatalf("fewer than %d log lines containing %q within %s; log:\n%s", n, subs, timeout, b.Tail(60))
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

// Tail returns the last n lines.
func (b *Buffer) Tail(n int) string {
	lines := strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Field returns the text of key=value as slog's text handler writes it,
// for matching one field exactly: Field("remote", "1.2.3.4:5") matches
// "remote=1.2.3.4:5 " and a line ending with it, not "remote=1.2.3.4:56".
func Field(key, value string) string { return key + "=" + value + " " }

// containsAll reports whether line contains every one of subs; a sub that
// ends with a space (a Field) also matches at the end of the line.
func containsAll(line string, subs []string) bool {
	for _, s := range subs {
		if !strings.Contains(line, s) && !(strings.HasSuffix(s, " ") && strings.HasSuffix(line, strings.TrimSuffix(s, " "))) {
			return false
		}
	}
	return true
}
