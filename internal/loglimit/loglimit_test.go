package loglimit

import (
	"testing"
	"time"
)

func TestLimiter(t *testing.T) {
	l := Limiter{Lines: 3}
	now := time.Now()
	logged := 0
	for range 10 {
		if ok, _ := l.Allow("a", now); ok {
			logged++
		}
	}
	if logged != 3 {
		t.Errorf("10 events in one second: %d logged, want 3", logged)
	}
	if ok, _ := l.Allow("b", now); !ok {
		t.Error("another key was held back by the first's flood")
	}
	ok, unsaid := l.Allow("a", now.Add(time.Second))
	if !ok || unsaid != 7 {
		t.Errorf("the next second: logged %v, unsaid %d; want true, 7", ok, unsaid)
	}
	var one Limiter // the zero value: one line a second
	if a, _ := one.Allow(1, now); !a {
		t.Error("the zero Limiter held back the first event")
	}
	if a, _ := one.Allow(1, now.Add(500*time.Millisecond)); a {
		t.Error("the zero Limiter logged two events in one second")
	}
}
