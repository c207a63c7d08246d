package tunnel

import (
	"encoding/binary"
	"slices"
	"testing"
)

// frame returns a yamux frame: header and body.
func frame(typ byte, flags uint16, id uint32, body []byte, length uint32) []byte {
	h := make([]byte, muxHeaderSize, muxHeaderSize+len(body))
	h[0], h[1] = 0, typ
	binary.BigEndian.PutUint16(h[2:], flags)
	binary.BigEndian.PutUint32(h[4:], id)
	binary.BigEndian.PutUint32(h[8:], length)
	return append(h, body...)
}

// tapAll feeds b to a fresh tap in pieces of the given sizes (cycled) and
// returns the streams it found readable, in order.
func tapAll(b []byte, pieces []int) []uint32 {
	var t frameTap
	var got []uint32
	for i := 0; len(b) > 0; i++ {
		n := len(b)
		if len(pieces) > 0 {
			n = min(n, max(1, pieces[i%len(pieces)]))
		}
		t.feed(b[:n])
		b = b[n:]
		got = append(got, t.done...)
		t.done = t.done[:0]
	}
	return got
}

// The tap finds the streams whose data, end or reset has come in, however
// the connection's reads split the frames.
func TestFrameTapFindsReadableStreams(t *testing.T) {
	var wire []byte
	wire = append(wire, frame(muxTypeData, 0, 3, []byte("hello"), 5)...)
	wire = append(wire, frame(muxTypeWindowUpdate, 0, 3, nil, 1<<16)...)         // more credit: not readable
	wire = append(wire, frame(2, 0, 0, nil, 7)...)                               // ping
	wire = append(wire, frame(muxTypeData, 0, 5, make([]byte, 40000), 40000)...) // a large body
	wire = append(wire, frame(muxTypeWindowUpdate, muxFlagFIN, 7, nil, 0)...)    // end
	wire = append(wire, frame(muxTypeWindowUpdate, muxFlagRST, 9, nil, 0)...)    // reset
	wire = append(wire, frame(muxTypeData, muxFlagFIN, 11, nil, 0)...)           // end as data
	wire = append(wire, frame(muxTypeData, 0, 5, []byte("x"), 1)...)             // 5 again
	want := []uint32{3, 5, 7, 9, 11, 5}
	for _, pieces := range [][]int{nil, {1}, {5, 7, 11}, {12}, {13, 4096}} {
		if got := tapAll(wire, pieces); !slices.Equal(got, want) {
			t.Errorf("read in pieces %v: readable %v, want %v", pieces, got, want)
		}
	}
	// A frame not yet complete is not told.
	if got := tapAll(wire[:muxHeaderSize+4], nil); len(got) != 0 {
		t.Errorf("half a data frame: readable %v, want none", got)
	}
}

// FuzzFrameTap: whatever the peer sends, and however it is split into
// reads, the tap does not panic and finds the same streams.
func FuzzFrameTap(f *testing.F) {
	f.Add(frame(muxTypeData, 0, 3, []byte("hello"), 5), 3)
	f.Add(append(frame(muxTypeWindowUpdate, muxFlagFIN, 1, nil, 0), frame(muxTypeData, 0, 2, nil, 1<<31)...), 1)
	f.Add([]byte("not a frame at all, just bytes"), 7)
	f.Fuzz(func(t *testing.T, b []byte, piece int) {
		// A stream told twice in a row is told once, or twice if the
		// frames came in two reads: either is right.
		whole := slices.Compact(tapAll(b, nil))
		if split := slices.Compact(tapAll(b, []int{piece % 97, piece % 13, 1})); !slices.Equal(whole, split) {
			t.Fatalf("read whole: %v; read in pieces: %v", whole, split)
		}
	})
}
