package tunnel

import (
	"bytes"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
)

// muxStreamBytes opens a stream on client, writes p on it, and returns
// what the server has read of it after at most 5s. (A deadline would not
// do: a Read waits, without one, for the frame yamux is reading.)
func muxStreamBytes(t *testing.T, client, server *yamux.Session, p []byte) []byte {
	t.Helper()
	st, err := client.Open()
	if err != nil {
		t.Fatal(err)
	}
	go st.Write(p)
	var mu sync.Mutex // guards got
	var got []byte
	done := make(chan struct{})
	go func() {
		defer close(done)
		sst, err := server.Accept()
		if err != nil {
			return
		}
		buf := make([]byte, len(p))
		for len(got) < len(p) {
			n, err := sst.Read(buf)
			mu.Lock()
			got = append(got, buf[:n]...)
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
	}
	mu.Lock()
	defer mu.Unlock()
	return slices.Clone(got)
}

// A data frame's header waits for its body, and the body leaves at once
// even when it looks like a header itself: a stream's bytes that are
// yamux's own data header reach the peer without any later write.
func TestBatchWriterSendsEachFrameWhole(t *testing.T) {
	// A real data header: what yamux writes before a 12-byte body.
	a, b := net.Pipe()
	rec := &recordConn{Conn: a}
	client, server := muxPair(t, rec, b, 256)
	body := []byte("twelve bytes")
	if got := muxStreamBytes(t, client, server, body); !bytes.Equal(got, body) {
		t.Fatalf("plain yamux carried %q, want %q", got, body)
	}
	traffic := rec.written()
	header := traffic[len(traffic)-2*len(body) : len(traffic)-len(body)]

	// The same, through a batchWriter, with that header as the body.
	a, b = net.Pipe()
	client, server = muxPair(t, newBatchWriter(a, time.Minute, new(atomic.Uint64)), b, 256)
	if got := muxStreamBytes(t, client, server, header); !bytes.Equal(got, header) {
		t.Fatalf("through the batch writer, the peer got % x of a body shaped like a data header, % x", got, header)
	}
}
