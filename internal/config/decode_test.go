package config

import (
	"errors"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestSyntaxErrorLines checks that YAML syntax errors point at the line a
// person would look at, whether the library's parser or scanner found them.
func TestSyntaxErrorLines(t *testing.T) {
	tests := []struct{ doc, want string }{
		{"data_dir: /d\ntunnel:\n  listen: :1\n listen: :2\n", "x.yaml:4: invalid YAML: did not find expected key"},
		{"data_dir: /d\nlog: {}\n- item\n", "x.yaml:3: invalid YAML: did not find expected key"},
		{"data_dir: /d\nedges: [a:1, b:2\nlog: {}\n", "x.yaml:2: invalid YAML: did not find expected ',' or ']'"},
		{"data_dir: /d\nkeyfile: k: v\n", "x.yaml:2: invalid YAML: mapping values are not allowed in this context"},
		{"data_dir: @d\n", "x.yaml:1: invalid YAML: found character that cannot start any token"},
		{"- a\nb: c\n", "x.yaml:2: invalid YAML: did not find expected '-' indicator"},
		{"data_dir: \"/d\n", "x.yaml:2: invalid YAML: found unexpected end of stream"},
		{"data_dir: *nowhere\n", "x.yaml: invalid YAML: unknown anchor 'nowhere' referenced"},
	}
	for _, tt := range tests {
		_, err := ReadConnector(strings.NewReader(tt.doc), "x.yaml")
		if err == nil || err.Error() != tt.want {
			t.Errorf("ReadConnector(%q):\n got: %v\nwant: %s", tt.doc, err, tt.want)
		}
	}
}

// kinds exercises the decoder on every kind of field it supports.
type kinds struct {
	S   string            `yaml:"s"`
	I   int               `yaml:"i"`
	I8  int8              `yaml:"i8"`
	U   uint16            `yaml:"u"`
	B   bool              `yaml:"b"`
	D   time.Duration     `yaml:"d"`
	L   []int             `yaml:"l"`
	M   map[string]string `yaml:"m"`
	P   *kinds            `yaml:"p"`
	PS  *string           `yaml:"ps"`
	Def string
	Off string `yaml:"-"`
}

func decodeKinds(t *testing.T, doc string) (kinds, Problems) {
	t.Helper()
	var k kinds
	var o Origin
	if err := readInto(strings.NewReader(doc), "k.yaml", &k, &o); err != nil {
		t.Fatalf("readInto(%q): %v", doc, err)
	}
	return k, o.read
}

func TestDecodeKinds(t *testing.T) {
	doc := `
s: 5432
i: 0x10
i8: -128
u: 1_000
b: True
d: 1m30s
l: [1, 2, 3]
m: {a: x, b: "y"}
p:
  s: inner
  p: {i: 7}
ps: here
def: untagged
`
	got, ps := decodeKinds(t, doc)
	if len(ps) != 0 {
		t.Fatalf("problems: %v", ps)
	}
	here := "here"
	want := kinds{
		S: "5432", I: 16, I8: -128, U: 1000, B: true, D: 90 * time.Second,
		L: []int{1, 2, 3}, M: map[string]string{"a": "x", "b": "y"},
		P:   &kinds{S: "inner", P: &kinds{I: 7}},
		PS:  &here,
		Def: "untagged",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("decoded:\n got %+v\nwant %+v", got, want)
	}
}

func TestDecodeKindsProblems(t *testing.T) {
	tests := []struct{ doc, want string }{
		{"i: 1.5\n", `k.yaml:1: i: expected a whole number, got "1.5"`},
		{"i8: 128\n", "k.yaml:1: i8: number 128 is out of range"},
		{"u: -1\n", "k.yaml:1: u: number -1 is out of range"},
		{"i: 99999999999999999999\n", "k.yaml:1: i: number 99999999999999999999 is out of range"},
		{"l: [1, x]\n", `k.yaml:1: l[1]: expected a whole number, got "x"`},
		{"m: [a]\n", "k.yaml:1: m: expected a mapping, got a list"},
		{"p:\n  p:\n    q: 1\n", "k.yaml:3: p.p.q: unknown key (known: s, i, i8, u, b, d, l, m, p, ps, def)"},
		{"off: 1\n", "k.yaml:1: off: unknown key (known: s, i, i8, u, b, d, l, m, p, ps, def)"},
		{"m:\n  ? [a]\n  : b\n", "k.yaml:2: m: expected a plain key, got a list"},
		{"s: !!binary aGk=\n", "k.yaml:1: s: unsupported YAML tag !!binary; write a plain value"},
		{"d: [1s]\n", "k.yaml:1: d: expected a duration such as 15s, got a list"},
		{"b: 1\n", `k.yaml:1: b: expected true or false, got "1"`},
	}
	for _, tt := range tests {
		_, ps := decodeKinds(t, tt.doc)
		if got := ps.Error(); got != tt.want {
			t.Errorf("decode %q:\n got: %s\nwant: %s", tt.doc, got, tt.want)
		}
	}
}

func TestDecodeNullsLeaveFieldsUnset(t *testing.T) {
	got, ps := decodeKinds(t, "s:\ni: ~\np: null\nl:\n")
	if len(ps) != 0 || !reflect.DeepEqual(got, kinds{}) {
		t.Errorf("got %+v, problems %v; want the zero value", got, ps)
	}
	for _, doc := range []string{"", "# only a comment\n", "---\n", "~\n"} {
		got, ps := decodeKinds(t, doc)
		if len(ps) != 0 || !reflect.DeepEqual(got, kinds{}) {
			t.Errorf("%q: got %+v, problems %v; want the zero value", doc, got, ps)
		}
	}
}

// TestAliasBombIsCheap shows that a document built to expand exponentially
// through aliases is refused at once instead of being expanded.
func TestAliasBombIsCheap(t *testing.T) {
	var b strings.Builder
	b.WriteString("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n")
	for i := 1; i < 30; i++ {
		b.WriteString("a" + strconv.Itoa(i) + ": &a" + strconv.Itoa(i) + " [")
		for j := range 10 {
			if j > 0 {
				b.WriteString(", ")
			}
			b.WriteString("*a" + strconv.Itoa(i-1))
		}
		b.WriteString("]\n")
	}
	b.WriteString("data_dir: *a29\n")
	_, err := DecodeEdge(strings.NewReader(b.String()), "bomb.yaml")
	if err == nil || !strings.Contains(err.Error(), "bomb.yaml:1: a0: unknown key") ||
		!strings.Contains(err.Error(), "bomb.yaml:31: data_dir: YAML aliases (*a29) are not supported") {
		t.Errorf("err = %v", err)
	}
}

func TestManyProblemsAreCapped(t *testing.T) {
	var b strings.Builder
	b.WriteString("data_dir: /d\n")
	for i := range 150 {
		b.WriteString("key" + strconv.Itoa(i) + ": 1\n")
	}
	_, err := DecodeEdge(strings.NewReader(b.String()), "junk.yaml")
	var ps Problems
	if !errors.As(err, &ps) || len(ps) != MaxProblems {
		t.Fatalf("got %d problems, want %d: %v", len(ps), MaxProblems, err)
	}
	if got, want := ps[0].Error(), "junk.yaml:2: key0: unknown key (known: data_dir, tunnel, admin, drain_timeout, log, audit, store, cluster, limits, connector_certificate_ttl, listeners, services)"; got != want {
		t.Errorf("first problem = %s, want %s", got, want)
	}
	if got, want := ps[len(ps)-1].Error(), "junk.yaml: 51 more problems not shown (is this the right file?)"; got != want {
		t.Errorf("last problem = %s, want %s", got, want)
	}
}
