package wire

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// TestEdgeSetRoundTrip: the largest set the bounds allow travels intact.
func TestEdgeSetRoundTrip(t *testing.T) {
	var set []EdgeAddr
	for i := range MaxEdges {
		id := fmt.Sprintf("edge-%02d", i) + strings.Repeat("x", MaxEdgeID-7)
		set = append(set, EdgeAddr{ID: id, Address: strings.Repeat("a", MaxAddress-5) + ":5500"})
	}
	b, err := AppendEdgeSet(nil, set)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != MaxEdgeSet {
		t.Fatalf("largest set is %d bytes, MaxEdgeSet %d", len(b), MaxEdgeSet)
	}
	got, err := ReadEdgeSet(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(set) {
		t.Fatal("the set changed on the way")
	}
}

// TestEdgeSetRefusesBadInput: what an edge (or an attacker on a tunnel)
// could send that a connector must not accept.
func TestEdgeSetRefusesBadInput(t *testing.T) {
	good, _ := AppendEdgeSet(nil, []EdgeAddr{{ID: "a", Address: "h:1"}})
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"too many", append([]byte{MaxEdges + 1}, bytes.Repeat([]byte{1, 'a', 3, 'h', ':', '1'}, MaxEdges+1)...)},
		{"oversized", bytes.Repeat([]byte{1}, MaxEdgeSet+1)},
		{"cut short", good[:len(good)-1]},
		{"trailing bytes", append(good, 'x')},
		{"space in address", []byte{1, 1, 'a', 3, 'h', ' ', '1'}},
		{"newline in address", []byte{1, 1, 'a', 3, 'h', '\n', '1'}},
		{"empty address", []byte{1, 1, 'a', 0}},
		{"empty id", []byte{1, 0, 3, 'h', ':', '1'}},
		{"bad id", []byte{1, 1, '/', 3, 'h', ':', '1'}},
		{"length past the end", []byte{1, 1, 'a', 200, 'h'}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			set, err := ReadEdgeSet(bytes.NewReader(tc.data))
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("ReadEdgeSet = %v, %v; want ErrMalformed", set, err)
			}
		})
	}
	if _, err := AppendEdgeSet(nil, make([]EdgeAddr, MaxEdges+1)); err == nil {
		t.Fatal("encoded more than MaxEdges")
	}
	if ValidName(EdgesService) {
		t.Fatal("EdgesService is a valid service name: a configured service could collide with it")
	}
}
