package admission_test

import (
	"fmt"
	"testing"

	"github.com/sallyport/sallyport/internal/admission"
)

// The ring keeps the last refusals, newest first, and never more than its
// size, however many come (a flood of refusals costs a fixed amount).
func TestRecentKeepsTheLast(t *testing.T) {
	r := admission.NewRecent(3)
	if got := r.List(); len(got) != 0 {
		t.Fatalf("a new ring lists %v", got)
	}
	add := func(from, to int) {
		for i := from; i < to; i++ {
			r.Add(admission.Recorded{Client: fmt.Sprint(i)})
		}
	}
	clients := func() string {
		var s string
		for _, rec := range r.List() {
			s += rec.Client
		}
		return s
	}
	add(0, 2)
	if got := clients(); got != "10" {
		t.Fatalf("after 2: %q, want 10", got)
	}
	add(2, 1000)
	if got := clients(); got != "999998997" {
		t.Fatalf("after 1000: %q, want the last three newest first", got)
	}
	var zero admission.Recent
	zero.Add(admission.Recorded{})
	if got := zero.List(); len(got) != 0 {
		t.Fatalf("the zero ring kept %v", got)
	}
}
