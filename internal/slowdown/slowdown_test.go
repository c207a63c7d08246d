package slowdown

import (
	"net/netip"
	"testing"
	"time"
)

// Failures from one address are answered ever later (100ms, 200ms,
// 400ms... at most 5s); another address, a success, or a quiet minute
// starts again from the first step.
func TestFailures(t *testing.T) {
	var b Failures
	a, other := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	now := time.Now()
	for i, want := range []time.Duration{100, 200, 400, 800, 1600, 3200, 5000, 5000} {
		if got := b.Failed(a, now); got != want*time.Millisecond {
			t.Errorf("failure %d: wait %v, want %v", i+1, got, want*time.Millisecond)
		}
	}
	if got := b.Failed(other, now); got != 100*time.Millisecond {
		t.Errorf("another address waits %v, want 100ms", got)
	}
	b.Succeeded(a)
	if got := b.Failed(a, now); got != 100*time.Millisecond {
		t.Errorf("after a success: %v, want 100ms", got)
	}
	if got := b.Failed(a, now.Add(time.Minute)); got != 100*time.Millisecond {
		t.Errorf("after a quiet minute: %v, want 100ms", got)
	}
	if got := b.Failed(netip.Addr{}, now); got != 0 {
		t.Errorf("an unknown address waits %v", got)
	}
}

// An attacker with more addresses than MaxSources cannot make the map
// grow past it, and a remembered address keeps its count.
func TestFailuresBounded(t *testing.T) {
	var b Failures
	now := time.Now()
	first := netip.MustParseAddr("198.18.0.1")
	b.Failed(first, now)
	ip := netip.MustParseAddr("198.19.0.0")
	for range 2 * MaxSources {
		ip = ip.Next()
		b.Failed(ip, now)
	}
	if n := len(b.fails); n > MaxSources {
		t.Fatalf("%d addresses remembered, want at most %d", n, MaxSources)
	}
	if got := b.Failed(first, now); got != 2*First {
		t.Fatalf("a remembered address's second failure waits %v, want %v", got, 2*First)
	}
}

// Wait says how long is left of the wait the last failure earned, and
// nothing for an address that never failed or waited it out.
func TestWait(t *testing.T) {
	var b Failures
	a := netip.MustParseAddr("192.0.2.1")
	now := time.Now()
	if got := b.Wait(a, now); got != 0 {
		t.Fatalf("an address with no failure waits %v", got)
	}
	b.Failed(a, now)
	b.Failed(a, now)
	if got := b.Wait(a, now.Add(50*time.Millisecond)); got != 150*time.Millisecond {
		t.Fatalf("50ms after a second failure: wait %v, want 150ms", got)
	}
	if got := b.Wait(a, now.Add(time.Second)); got != 0 {
		t.Fatalf("after the wait: %v", got)
	}
	if got := b.Wait(netip.MustParseAddr("192.0.2.2"), now); got != 0 {
		t.Fatalf("another address waits %v", got)
	}
}
