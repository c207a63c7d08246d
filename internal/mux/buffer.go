package mux

import "sync"

// A stream's receive buffer: a list of fixed-size chunks from a pool.
// Bytes are appended in the tail chunk's free space, so that small frames
// pack together, and each chunk goes back to the pool as soon as it has
// been read. A stream that holds no unread byte holds no chunk.

// chunkSize is the size of a receive buffer's chunks.
const chunkSize = 16 << 10

type chunk [chunkSize]byte

var chunks = sync.Pool{New: func() any { return new(chunk) }}

// recvBuf is a stream's receive buffer. Its owner (the stream, under its
// lock) calls every method; the session's reader fills the space that
// space returned outside the lock while filling is set (see
// Stream.receive), and nothing else touches that space meanwhile.
type recvBuf struct {
	list []*chunk
	r    int // read offset in list[0]
	w    int // write offset in the last chunk
	n    int // bytes buffered
}

// space returns free space at the tail for at most n bytes, adding a
// chunk if the tail is full.
func (b *recvBuf) space(n int) []byte {
	if len(b.list) == 0 || b.w == chunkSize {
		b.list = append(b.list, chunks.Get().(*chunk))
		b.w = 0
	}
	tail := b.list[len(b.list)-1]
	return tail[b.w:min(chunkSize, b.w+n)]
}

// commit adds the n bytes written into the last space.
func (b *recvBuf) commit(n int) {
	b.w += n
	b.n += n
}

// read moves buffered bytes into p. If keepTail is set the tail chunk
// stays even when emptied (the reader fills it).
func (b *recvBuf) read(p []byte, keepTail bool) int {
	total := 0
	for len(p) > 0 && b.n > 0 {
		c := b.list[0]
		end := chunkSize
		if len(b.list) == 1 {
			end = b.w
		}
		k := copy(p, c[b.r:end])
		p = p[k:]
		b.r += k
		b.n -= k
		total += k
		if b.r == end && (len(b.list) > 1 || !keepTail) {
			b.pop()
		}
	}
	return total
}

// pop gives the head chunk back.
func (b *recvBuf) pop() {
	chunks.Put(b.list[0])
	b.list[0] = nil
	b.list = b.list[1:]
	b.r = 0
	if len(b.list) == 0 {
		b.list = nil
		b.w = 0
	}
}

// reset gives every chunk back, except the tail if keepTail is set.
func (b *recvBuf) reset(keepTail bool) {
	if keepTail && len(b.list) > 0 {
		tail := b.list[len(b.list)-1]
		for _, c := range b.list[:len(b.list)-1] {
			chunks.Put(c)
		}
		b.list = append(b.list[:0], tail)
		b.r = b.w
		b.n = 0
		return
	}
	for _, c := range b.list {
		chunks.Put(c)
	}
	*b = recvBuf{}
}
