// Package config holds the typed configuration of sallyport's two roles, the
// edge and the connector, decoded strictly from YAML.
//
// Reading a file either succeeds or names every problem at once, each with
// the file, the line and the key:
//
//	cfg, err := config.LoadEdge("edge.yaml")
//	if err != nil {
//		// edge.yaml:12: services.db.listn: unknown key (known: listen)
//		// edge.yaml:5: tunnel.keepalive_interval: invalid duration "5x" (use e.g. 15s)
//		return err
//	}
//
// A caller that lays command-line flags over a file reads it with ReadEdge
// (or ReadConnector), changes the fields, records where each came from with
// Origin.SetFlag, then calls ApplyDefaults and Validate; Validate then reports
// the problems found while reading together with the semantic ones. A config
// built from flags alone is a zero value filled in the same way.
//
// Every error this package returns for a bad configuration matches ErrInvalid
// with errors.Is; errors.As finds a Problems (all of them) or a Problem (the
// first).
package config

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/sallyport/sallyport/internal/wire"
)

// MaxFileSize is the largest config document accepted, in bytes. A config
// file is a few kilobytes; the bound keeps a wrong or hostile file from
// costing much time or memory.
const MaxFileSize = 1 << 20

// Defaults applied by ApplyDefaults to fields left at their zero value.
// The keepalive ones are the tunnel protocol's own, so that a tunnel
// configured here and one left to package tunnel's defaults agree.
const (
	DefaultTunnelListen      = ":5500"
	DefaultAdminListen       = "127.0.0.1:5501"
	DefaultDrainTimeout      = 30 * time.Second
	DefaultKeepaliveInterval = wire.DefaultKeepaliveInterval
	DefaultKeepaliveTimeout  = wire.DefaultKeepaliveTimeout
	DefaultTunnelDialTimeout = 10 * time.Second
	DefaultBackoffMin        = 250 * time.Millisecond
	DefaultBackoffMax        = 30 * time.Second
	DefaultJoinSpread        = 30 * time.Second
	DefaultLeaveGrace        = 30 * time.Second
	DefaultServiceDial       = 5 * time.Second
	DefaultLogFormat         = "text"
	DefaultLogLevel          = "info"
)

// ErrInvalid is matched (errors.Is) by every error that reports a bad
// configuration, as opposed to a file that could not be opened.
var ErrInvalid = errors.New("invalid configuration")

// Problem is one thing wrong with a configuration, placed as precisely as its
// origin allows.
type Problem struct {
	// File is the config file's name as given; empty when the value did not
	// come from a file.
	File string
	// Line is the 1-based line in File; 0 when the problem has no one line
	// (a required key that is missing, a file that is too large).
	Line int
	// Flag is the command-line flag the value came from, e.g. "--expose";
	// empty when it came from a file or from defaults.
	Flag string
	// Key is the dotted key path, e.g. "services.db.listen" or "edges[1]";
	// empty for the document as a whole.
	Key string
	// Msg says what is wrong and, where it can, what to write instead.
	Msg string
}

// Error formats the problem as "file:line: key: message",
// "flag --name: key: message" or "key: message", leaving out what is unknown.
func (p Problem) Error() string {
	var b strings.Builder
	switch {
	case p.Flag != "":
		b.WriteString("flag " + p.Flag + ": ")
	case p.File != "" && p.Line > 0:
		fmt.Fprintf(&b, "%s:%d: ", p.File, p.Line)
	case p.File != "":
		b.WriteString(p.File + ": ")
	}
	if p.Key != "" {
		b.WriteString(p.Key + ": ")
	}
	b.WriteString(p.Msg)
	return b.String()
}

// Is reports whether target is ErrInvalid.
func (p Problem) Is(target error) bool { return target == ErrInvalid }

// Problems is every problem found in one configuration, in file order
// (problems without a line first), up to MaxProblems. A non-nil error from Validate, the Load
// and Decode functions is a Problems unless a file could not be read.
type Problems []Problem

// Error prints one problem per line.
func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.Error()
	}
	return strings.Join(lines, "\n")
}

// Is reports whether target is ErrInvalid.
func (ps Problems) Is(target error) bool { return target == ErrInvalid }

// Unwrap returns each problem, so that errors.As finds the first Problem.
func (ps Problems) Unwrap() []error {
	errs := make([]error, len(ps))
	for i, p := range ps {
		errs[i] = p
	}
	return errs
}

// MaxProblems is the most problems reported for one configuration; past it
// the last entry counts the rest. Only a file that is not a config at all
// gets near it.
const MaxProblems = 100

// asError returns ps sorted into file order, or nil when it is empty.
func (ps Problems) asError() error {
	if len(ps) == 0 {
		return nil
	}
	sort.SliceStable(ps, func(i, j int) bool { return ps[i].Line < ps[j].Line })
	if len(ps) > MaxProblems {
		more := Problem{File: ps[MaxProblems].File, Msg: fmt.Sprintf(
			"%d more problems not shown (is this the right file?)", len(ps)-MaxProblems+1)}
		ps = append(ps[:MaxProblems-1], more)
	}
	return ps
}

// Origin records where the values of a configuration came from, so that
// problems can be reported at their file and line or flag. The zero value
// stands for a configuration built in code: problems then name the key only.
//
// Copies of a config share their Origin's records. An Origin is not safe for
// concurrent use while SetFlag is being called.
type Origin struct {
	// File is the name of the file the configuration was read from, as used
	// in messages; empty when there was none.
	File string

	lines   map[string]int      // key path → line of its key (or list item)
	flags   map[string]string   // key path → flag that set it
	read    Problems            // problems found while decoding
	bad     map[string]bool     // key paths whose value could not be decoded
	unknown map[string][]string // mapping path → unknown keys found in it
}

// SetFlag records that the value at key (a dotted path such as
// "services.db" or "data_dir") was set by the command-line flag flag (such as
// "--expose"). Problems at key or below it are then reported as
// "flag --expose: services.db.listen: ...".
func (o *Origin) SetFlag(key, flag string) {
	if o.flags == nil {
		o.flags = make(map[string]string)
	}
	o.flags[key] = flag
}

// Line returns the line of the file on which key (a dotted path, with [i]
// for list items) was written, or 0 when it was not read from the file.
func (o Origin) Line(key string) int { return o.lines[key] }

// place fills in where a problem about key was set: the flag that set key or
// one of its parents, else the line of key or of its nearest parent written
// in the file.
func (o Origin) place(key string) Problem {
	for k := key; ; k = parentPath(k) {
		if f, ok := o.flags[k]; ok {
			return Problem{Flag: f, Key: key}
		}
		if k == "" {
			break
		}
	}
	p := Problem{File: o.File, Key: key}
	for k := key; k != ""; k = parentPath(k) {
		if l, ok := o.lines[k]; ok {
			p.Line = l
			break
		}
	}
	return p
}

// covered reports whether key or one of its parents had a value that could
// not be decoded; semantic checks of such keys would only repeat the problem.
func (o Origin) covered(key string) bool {
	for k := key; ; k = parentPath(k) {
		if o.bad[k] {
			return true
		}
		if k == "" {
			return false
		}
	}
}

// misspelt reports whether the mapping at parent held an unknown key that is
// probably a misspelling of leaf, so that "leaf is required" would only
// repeat the unknown-key problem.
func (o Origin) misspelt(parent, leaf string) bool {
	for _, u := range o.unknown[parent] {
		limit := 2
		if len(leaf) > 6 {
			limit = len(leaf) / 3
		}
		if editDistance(u, leaf) <= limit {
			return true
		}
	}
	return false
}

// parentPath returns the path of the mapping or list that holds key:
// "services.db.listen" → "services.db", "edges[1]" → "edges", "data_dir" → "".
func parentPath(key string) string {
	i := strings.LastIndexAny(key, ".[")
	if i < 0 {
		return ""
	}
	return key[:i]
}

// joinKey returns the path of key inside the mapping at parent.
func joinKey(parent, key string) string {
	if parent == "" {
		return key
	}
	return parent + "." + key
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
