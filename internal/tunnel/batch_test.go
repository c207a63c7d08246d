package tunnel

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"
)

func muxHeader(typ byte, length uint32) []byte {
	h := make([]byte, muxHeaderSize)
	h[1] = typ
	binary.BigEndian.PutUint32(h[8:], length)
	return h
}

// A data frame's header waits for its body, and the body leaves at once
// even when it happens to look like a header itself.
func TestBatchWriterSendsEachFrameWhole(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	w := newBatchWriter(a)
	defer w.Close()
	body := muxHeader(muxTypeData, 99) // a 12-byte body shaped like a header
	frame := append(muxHeader(muxTypeData, uint32(len(body))), body...)
	go func() {
		w.Write(frame[:muxHeaderSize])
		w.Write(frame[muxHeaderSize:])
	}()
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, len(frame))
	if _, err := io.ReadFull(b, got); err != nil {
		t.Fatalf("the frame did not arrive whole without a later write: %v", err)
	}
	if !bytes.Equal(got, frame) {
		t.Fatalf("got % x, want % x", got, frame)
	}
}
