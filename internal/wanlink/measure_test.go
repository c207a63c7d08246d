//go:build linux

package wanlink

import (
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// TestMeasure measures a link by hand, reporting and asserting nothing
// but what it saw: the round trip, and iperf3 with 1 and 8 streams from
// far to site, with the CPU time this process (the delayers) spent:
//
//	WANLINK_MEASURE=50ms,1%,1gbit go test -run TestMeasure -v ./internal/wanlink/
//
// WANLINK_MEASURE_SECONDS sets iperf3's time (default 10, after 2 omitted).
func TestMeasure(t *testing.T) {
	spec := os.Getenv("WANLINK_MEASURE")
	if spec == "" {
		t.Skip("set WANLINK_MEASURE=RTT[,loss][,rate] to measure a link by hand")
	}
	secs := os.Getenv("WANLINK_MEASURE_SECONDS")
	if secs == "" {
		secs = "10"
	}
	l := startLink(t, spec)
	rtts := pingRTTs(t, l, 50, "0.02")
	if len(rtts) > 0 {
		t.Logf("%s: ping min %.2f, median %.2f, max %.2f ms (%d of 50 answered)",
			spec, rtts[0], rtts[len(rtts)/2], rtts[len(rtts)-1], len(rtts))
	}
	iperf3Server(t, l)
	for _, streams := range []int{1, 8} {
		before, start := cpuTime(), time.Now()
		toSite0, toFar0 := l.Stats()
		r := iperf3(t, l, "-t", secs, "-O", "2", "-P", strconv.Itoa(streams))
		wall := time.Since(start)
		user, sys := cpuTime().sub(before)
		toSite, toFar := l.Stats()
		t.Logf("%s: iperf3 -P%d far to site: %.0f Mbit/s, %d retransmits; delayers' CPU %.0f%% of one core (user %.0f%%, system %.0f%%)",
			spec, streams, r.End.SumReceived.BitsPerSecond/1e6, r.End.SumSent.Retransmits,
			100*(user+sys).Seconds()/wall.Seconds(), 100*user.Seconds()/wall.Seconds(), 100*sys.Seconds()/wall.Seconds())
		t.Logf("  to site: %d packets (%.1f KB each), %d lost, %d cut, %d full; to far: %d packets, %d lost, %d full",
			toSite.Packets-toSite0.Packets, float64(toSite.Bytes-toSite0.Bytes)/float64(max(1, toSite.Packets-toSite0.Packets))/1000,
			toSite.Lost-toSite0.Lost, toSite.Cut-toSite0.Cut, toSite.Full-toSite0.Full,
			toFar.Packets-toFar0.Packets, toFar.Lost-toFar0.Lost, toFar.Full-toFar0.Full)
	}
}

// cpu is this process's CPU time so far.
type cpu struct{ user, sys time.Duration }

func cpuTime() cpu {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return cpu{time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano())}
}

// sub returns the user and system time spent since before.
func (c cpu) sub(before cpu) (user, sys time.Duration) {
	return c.user - before.user, c.sys - before.sys
}
