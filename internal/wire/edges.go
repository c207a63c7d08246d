package wire

import (
	"errors"
	"fmt"
	"io"
)

// EdgesService is the service name of a membership stream (step 8 of the
// protocol flow). It is no valid service name (ValidName refuses a
// leading '_'), so no client and no operator can make the edge open a
// stream for it by other means, and a connector that predates it refuses
// it as an unknown service rather than misreading it.
const EdgesService = "_edges"

// Bounds of an edge set.
const (
	// MaxEdges bounds the edges in one set.
	MaxEdges = 64
	// MaxEdgeID bounds an edge id on the wire.
	MaxEdgeID = 63
	// MaxEdgeSet is the largest encoded set.
	MaxEdgeSet = 1 + MaxEdges*(1+MaxEdgeID+1+MaxAddress)
)

// EdgeAddr is one tunnel address of an edge of the cluster. An edge with
// several addresses appears once for each.
type EdgeAddr struct {
	// ID is the edge's id: addresses with the same id reach the same
	// edge, so a connector keeps one tunnel (pool) to it, not one per
	// address.
	ID string
	// Address is a host:port of its tunnel port or a wss:// address of
	// its https listener, as connectors should dial it.
	Address string
}

// AppendEdgeSet appends the encoding of a membership stream's body to b:
//
//	+------+----------------------------------------------+
//	| 1 B  | n times:                                     |
//	| n    | 1 B id len, id, 1 B address len, address     |
//	+------+----------------------------------------------+
//
// n is at most MaxEdges; ids are 1-MaxEdgeID bytes of letters, digits,
// '-' and '_'; addresses are 1-MaxAddress bytes of printable ASCII
// without spaces. The body ends with the stream (FIN).
func AppendEdgeSet(b []byte, set []EdgeAddr) ([]byte, error) {
	if len(set) > MaxEdges {
		return b, fmt.Errorf("encode edge set: %d addresses; at most %d", len(set), MaxEdges)
	}
	for _, e := range set {
		if err := checkEdgeAddr(e); err != nil {
			return b, fmt.Errorf("encode edge set: %w", err)
		}
	}
	b = append(b, byte(len(set)))
	for _, e := range set {
		b = append(b, byte(len(e.ID)))
		b = append(b, e.ID...)
		b = append(b, byte(len(e.Address)))
		b = append(b, e.Address...)
	}
	return b, nil
}

// ReadEdgeSet reads a membership stream's body, to its end: bytes after
// the last address are malformed. It reads at most MaxEdgeSet+1 bytes.
func ReadEdgeSet(r io.Reader) ([]EdgeAddr, error) {
	body, err := io.ReadAll(io.LimitReader(r, MaxEdgeSet+1))
	if err != nil {
		return nil, fmt.Errorf("read edge set: %w", err)
	}
	if len(body) > MaxEdgeSet {
		return nil, fmt.Errorf("%w: edge set longer than %d bytes", ErrMalformed, MaxEdgeSet)
	}
	if len(body) == 0 {
		return nil, fmt.Errorf("%w: empty edge set", ErrMalformed)
	}
	n := int(body[0])
	if n > MaxEdges {
		return nil, fmt.Errorf("%w: edge set of %d addresses; at most %d", ErrMalformed, n, MaxEdges)
	}
	rest := body[1:]
	field := func(what string, max int) (string, error) {
		if len(rest) == 0 {
			return "", fmt.Errorf("%w: edge set cut short", ErrMalformed)
		}
		l := int(rest[0])
		if l > max || l > len(rest)-1 {
			return "", fmt.Errorf("%w: edge set %s of %d bytes", ErrMalformed, what, l)
		}
		v := string(rest[1 : 1+l])
		rest = rest[1+l:]
		return v, nil
	}
	set := make([]EdgeAddr, 0, n)
	for range n {
		var e EdgeAddr
		if e.ID, err = field("edge id", MaxEdgeID); err != nil {
			return nil, err
		}
		if e.Address, err = field("address", MaxAddress); err != nil {
			return nil, err
		}
		if err := checkEdgeAddr(e); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
		}
		set = append(set, e)
	}
	if len(rest) > 0 {
		return nil, fmt.Errorf("%w: %d bytes after the edge set", ErrMalformed, len(rest))
	}
	return set, nil
}

// checkEdgeAddr checks one entry's syntax; the connector checks that an
// address is one it can dial.
func checkEdgeAddr(e EdgeAddr) error {
	if e.ID == "" || len(e.ID) > MaxEdgeID {
		return fmt.Errorf("edge id must be 1-%d bytes", MaxEdgeID)
	}
	for i := 0; i < len(e.ID); i++ {
		c := e.ID[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return fmt.Errorf("edge id %q: use letters, digits, '-' and '_'", e.ID)
		}
	}
	if e.Address == "" || len(e.Address) > MaxAddress {
		return fmt.Errorf("edge %s: address must be 1-%d bytes", e.ID, MaxAddress)
	}
	for i := 0; i < len(e.Address); i++ {
		if c := e.Address[i]; c <= ' ' || c > '~' {
			return errors.New("edge " + e.ID + ": address holds a space or a byte that is not printable ASCII")
		}
	}
	return nil
}

// Membership reports whether the header opens a membership stream (step 8)
// rather than a client's stream or a lookup.
func (h StreamOpen) Membership() bool { return h.Service == EdgesService }
