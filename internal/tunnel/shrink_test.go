package tunnel

import (
	"bytes"
	"io"
	"runtime"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/wire"
)

// A stream that once held a backlog keeps a receive buffer of its size
// until the sweep; after the sweep the memory is free, and the stream
// still carries every byte.
func TestShrinkIdleFreesDrainedBuffers(t *testing.T) {
	connector, edge := sessions(t, tlsPair, Config{KeepaliveInterval: time.Hour, KeepaliveTimeout: 2 * time.Hour})
	es, cs := openPair(t, edge, connector, wire.StreamOpen{Service: "svc", Client: "192.0.2.1:1"})
	data := randomBytes(800<<10, 7)
	for round := range 2 {
		// The whole backlog fits the window: it waits in cs's buffer.
		if _, err := es.Write(data); err != nil {
			t.Fatalf("round %d: write: %v", round, err)
		}
		time.Sleep(300 * time.Millisecond) // let the backlog arrive
		got := make([]byte, len(data))
		cs.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(cs, got); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("round %d: read %v, bytes equal %v", round, err, bytes.Equal(got, data))
		}
		before := heapInUse()
		connector.shrinkIdle()
		if freed := before - heapInUse(); freed < 512<<10 {
			t.Errorf("round %d: the sweep freed %d bytes; want the drained %d-byte backlog's buffer", round, freed, len(data))
		}
	}
}

func heapInUse() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}
