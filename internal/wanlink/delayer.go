//go:build linux

package wanlink

import (
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// slot is one packet in the delay line: ring[off:off+n], due at due
// (time since the delayer started).
type slot struct {
	off, n int
	due    time.Duration
}

// delayer holds every packet it reads from a TUN device for a fixed delay
// and writes it back, in arrival order, less the lost fraction. The
// packets wait in one bounded ring of bytes (what is in flight on the
// link): a packet that finds no room is dropped.
//
// One goroutine reads (it alone moves tail), one writes (it alone moves
// head); Close stops both and waits for them.
type delayer struct {
	tun   *os.File
	delay time.Duration
	start time.Time
	ring  []byte
	queue chan slot
	tail  int          // reader's: where the next packet goes
	head  atomic.Int64 // writer's: the first byte still waiting to be written

	lossSteps int        // loss in steps of 1/LossResolution
	rng       *rand.Rand // the writer's
	scratch   []byte     // the writer's: pieces of super-packets

	// counters, read by stats
	packets, bytes, lost, cut, full, errors atomic.Uint64

	done chan struct{}
	wg   sync.WaitGroup
}

// Stats counts what a link's delayer did since the link started.
type Stats struct {
	Packets uint64 // packets written back after the delay (a super-packet counts once)
	Bytes   uint64 // their bytes, virtio_net_hdr included
	Lost    uint64 // packets (segments of super-packets) dropped by the loss
	Cut     uint64 // super-packets written back in pieces, around lost segments
	Full    uint64 // packets dropped because the delayer's buffer was full
	Errors  uint64 // packets the TUN device refused on the way back
}

// newDelayer starts delaying the packets of tun by delay in a buffer of
// at least buffer bytes, dropping lossSteps in LossResolution of them. It
// owns tun: Close closes it.
func newDelayer(tun *os.File, delay time.Duration, buffer, lossSteps int) *delayer {
	d := &delayer{
		tun:       tun,
		delay:     delay,
		start:     time.Now(),
		ring:      make([]byte, buffer+maxPacket),
		queue:     make(chan slot, 1<<16),
		lossSteps: lossSteps,
		rng:       rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())),
		scratch:   make([]byte, maxPacket),
		done:      make(chan struct{}),
	}
	d.wg.Add(2)
	go d.readLoop()
	go d.writeLoop()
	return d
}

// Close stops the delayer, closes its TUN device (which removes it) and
// waits for its goroutines. Packets still in the buffer are dropped.
func (d *delayer) Close() error {
	close(d.done)
	err := d.tun.Close()
	d.wg.Wait()
	return err
}

// room returns where in the ring the next packet can go, if there is room
// for the largest one. The writer only ever frees space, so a stale head
// errs on the side of too little room.
func (d *delayer) room() (int, bool) {
	head := int(d.head.Load())
	switch {
	case d.tail >= head: // in use: [head, tail)
		if len(d.ring)-d.tail >= maxPacket {
			return d.tail, true
		}
		if head > maxPacket {
			return 0, true
		}
	case head-d.tail > maxPacket: // in use: [head, end of the last lap) and [0, tail)
		return d.tail, true
	}
	return 0, false
}

func (d *delayer) readLoop() {
	defer d.wg.Done()
	scratch := make([]byte, maxPacket)
	for {
		off, ok := d.room()
		buf := scratch
		if ok {
			buf = d.ring[off : off+maxPacket]
		}
		n, err := d.tun.Read(buf)
		if err != nil {
			if errors.Is(err, os.ErrClosed) || errors.Is(err, io.EOF) {
				return
			}
			// Not ours to fix (the device gone with its namespace?):
			// wait for Close without spinning.
			select {
			case <-d.done:
				return
			case <-time.After(time.Millisecond):
			}
			continue
		}
		if !ok {
			d.full.Add(1)
			continue
		}
		select {
		case d.queue <- slot{off: off, n: n, due: time.Since(d.start) + d.delay}:
			d.tail = off + n
		default:
			d.full.Add(1)
		}
	}
}

func (d *delayer) writeLoop() {
	defer d.wg.Done()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		var s slot
		select {
		case s = <-d.queue:
		case <-d.done:
			return
		}
		if wait := s.due - time.Since(d.start); wait > 0 {
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-d.done:
				return
			}
		}
		d.send(d.ring[s.off : s.off+s.n])
		d.head.Store(int64(s.off + s.n))
	}
}

// send writes pkt back to the TUN device, less what the loss drops. It
// drops each segment of a TCP super-packet on its own: where it drops
// some, it writes the runs of segments in between as packets of their
// own (a super-packet dropped whole would be a burst of losses that the
// link's packets would not have suffered).
func (d *delayer) send(pkt []byte) {
	if d.lossSteps == 0 {
		d.write(pkt)
		return
	}
	sp, ok := parseSuperPacket(pkt)
	if !ok {
		if d.drop() {
			return
		}
		d.write(pkt)
		return
	}
	next, whole := 0, true // next: the first segment not yet written or dropped
	for k := range sp.segs {
		if !d.drop() {
			continue
		}
		whole = false
		if k > next {
			d.write(sp.piece(d.scratch, next, k))
		}
		next = k + 1
	}
	if whole {
		d.write(pkt)
		return
	}
	d.cut.Add(1)
	if next < sp.segs {
		d.write(sp.piece(d.scratch, next, sp.segs))
	}
}

// drop decides whether the loss drops one packet, and counts it if so.
func (d *delayer) drop() bool {
	if d.rng.IntN(LossResolution) >= d.lossSteps {
		return false
	}
	d.lost.Add(1)
	return true
}

// write writes pkt back, counting it first: whoever has seen a packet come
// out of the link finds it counted.
func (d *delayer) write(pkt []byte) {
	d.packets.Add(1)
	d.bytes.Add(uint64(len(pkt)))
	if _, err := d.tun.Write(pkt); err != nil {
		d.packets.Add(^uint64(0))
		d.bytes.Add(^uint64(len(pkt) - 1))
		d.errors.Add(1)
	}
}

// stats returns the counters.
func (d *delayer) stats() Stats {
	return Stats{
		Packets: d.packets.Load(),
		Bytes:   d.bytes.Load(),
		Lost:    d.lost.Load(),
		Cut:     d.cut.Load(),
		Full:    d.full.Load(),
		Errors:  d.errors.Load(),
	}
}
