package egress

import (
	"bufio"
	"bytes"
	"io"
	"testing"
)

// FuzzReadConnectResponse: whatever a proxy sends, the reader returns
// without panicking, consumes at most MaxResponse bytes, and on success
// has consumed exactly a head that ends in a blank line, leaving every
// later byte to the caller.
func FuzzReadConnectResponse(f *testing.F) {
	f.Add([]byte("HTTP/1.1 200 Connection established\r\n\r\n"))
	f.Add([]byte("HTTP/1.0 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"p\"\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 200 OK\nA: b\n\n\x16\x03\x01"))
	f.Add([]byte("\x05\x00"))
	f.Add([]byte("HTTP/1.1 2000\r\n\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		br := bufio.NewReaderSize(bytes.NewReader(in), maxStatusLine)
		code, _, err := ReadConnectResponse(br)
		rest, _ := io.ReadAll(br)
		consumed := in[:len(in)-len(rest)]
		if err != nil {
			return
		}
		if code < 0 || code > 999 {
			t.Fatalf("status %d", code)
		}
		if len(consumed) > MaxResponse {
			t.Fatalf("consumed %d bytes, over MaxResponse", len(consumed))
		}
		if !bytes.HasSuffix(consumed, []byte("\n\n")) && !bytes.HasSuffix(consumed, []byte("\n\r\n")) {
			t.Fatalf("consumed %q: does not end in a blank line", consumed)
		}
		if !bytes.HasPrefix(consumed, []byte("HTTP/1.")) {
			t.Fatalf("consumed %q: not a status line", consumed)
		}
	})
}
