package wstunnel

import (
	"net"
	"testing"
	"time"
)

// deadlineRecorder is a net.Conn whose writes record the write deadline
// in force when each was made.
type deadlineRecorder struct {
	net.Conn
	deadline time.Time
	sets     int // SetWriteDeadline calls
	writes   []time.Time
	sizes    []int
}

func (r *deadlineRecorder) SetWriteDeadline(t time.Time) error { r.deadline = t; r.sets++; return nil }
func (r *deadlineRecorder) SetReadDeadline(time.Time) error    { return nil }
func (r *deadlineRecorder) Write(b []byte) (int, error) {
	r.writes = append(r.writes, r.deadline)
	r.sizes = append(r.sizes, len(b))
	return len(b), nil
}

// Each message of a large write gets the deadline's length afresh, so
// only a peer that takes nothing for that long fails the write.
func TestWriteDeadlineBoundsEachMessage(t *testing.T) {
	rec := &deadlineRecorder{}
	c := &conn{Conn: rec}
	c.SetWriteDeadline(time.Now().Add(time.Hour))
	set := rec.deadline
	if n, err := c.Write(make([]byte, 3*MaxMessage+1)); n != 3*MaxMessage+1 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if len(rec.writes) != 4 || rec.sizes[0] != MaxMessage || rec.sizes[3] != 1 {
		t.Fatalf("messages of %v bytes; want 3 of %d and 1 of 1", rec.sizes, MaxMessage)
	}
	if !rec.writes[0].Equal(set) {
		t.Errorf("the first message had deadline %v, want the one set, %v", rec.writes[0], set)
	}
	if rec.sets != 4 {
		t.Errorf("%d deadlines set for a write of 4 messages after the caller's; want one before each further message", rec.sets-1)
	}
	for i := 1; i < 4; i++ {
		if rec.writes[i].Before(rec.writes[i-1]) || time.Until(rec.writes[i]) < 59*time.Minute {
			t.Errorf("message %d had deadline %v; want an hour from its start", i, rec.writes[i])
		}
	}
	// No deadline: none is set between messages.
	rec2 := &deadlineRecorder{}
	c2 := &conn{Conn: rec2}
	c2.SetWriteDeadline(time.Time{})
	c2.Write(make([]byte, 2*MaxMessage))
	for i, d := range rec2.writes {
		if !d.IsZero() {
			t.Errorf("message %d had deadline %v without one set", i, d)
		}
	}
}
