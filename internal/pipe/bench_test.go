package pipe_test

import (
	"io"
	"testing"

	"github.com/sallyport/sallyport/internal/loopback"
	"github.com/sallyport/sallyport/internal/pipe"
)

// BenchmarkJoinTCP measures Join's throughput from one loopback TCP
// connection to another, one way, in 64 KiB writes.
func BenchmarkJoinTCP(b *testing.B) {
	const chunk = 64 << 10
	peerA, a := loopback.Pair(b)
	c, peerB := loopback.Pair(b)
	res := make(chan pipe.Result, 1)
	go func() { res <- pipe.Join(a, c) }()
	read := make(chan int64, 1)
	go func() { n, _ := io.Copy(io.Discard, peerB); read <- n }()

	buf := make([]byte, chunk)
	b.SetBytes(chunk)
	b.ResetTimer()
	for range b.N {
		if _, err := peerA.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	peerA.CloseWrite()
	if n := <-read; n != int64(b.N)*chunk {
		b.Fatalf("B read %d bytes, want %d", n, int64(b.N)*chunk)
	}
	b.StopTimer()
	peerB.Close()
	peerA.Close()
	<-res
}
