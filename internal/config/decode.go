package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// readInto parses one YAML document from r and decodes it onto out (a
// pointer to a config struct), recording positions and per-key problems in
// origin. The returned error is for problems that stop reading altogether:
// an unreadable or oversized input, bad YAML syntax, several documents.
func readInto(r io.Reader, name string, out any, origin *Origin) error {
	*origin = Origin{
		File:    name,
		lines:   make(map[string]int),
		bad:     make(map[string]bool),
		unknown: make(map[string][]string),
	}
	data, err := io.ReadAll(io.LimitReader(r, MaxFileSize+1))
	if err != nil {
		return fmt.Errorf("read config %s: %w", name, err)
	}
	if len(data) > MaxFileSize {
		return Problems{{File: name, Msg: fmt.Sprintf(
			"larger than %d KiB; a config file is a few kilobytes (is this the right file?)", MaxFileSize>>10)}}
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // empty or only comments: every key unset
		}
		return Problems{syntaxProblem(name, data, err)}
	}
	var more yaml.Node
	switch err := dec.Decode(&more); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return Problems{syntaxProblem(name, data, err)}
	default:
		return Problems{{File: name, Line: more.Line, Msg: "a second YAML document; a config file holds one (remove the '---' line and what follows, or merge it into the first)"}}
	}
	d := decoder{origin: origin}
	root := &doc
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		root = doc.Content[0]
	}
	if root.Kind != yaml.MappingNode && !isNull(root) {
		d.fail(root.Line, "", "expected a mapping of keys at the top level, got %s", describe(root))
		return nil
	}
	d.decode(root, reflect.ValueOf(out).Elem(), "")
	return nil
}

// yamlLine matches the position prefix of the YAML library's syntax errors.
var yamlLine = regexp.MustCompile(`^yaml: line (\d+): `)

// syntaxProblem turns a YAML syntax error into a Problem at its line.
func syntaxProblem(name string, data []byte, err error) Problem {
	msg := err.Error()
	p := Problem{File: name}
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		p.Line, _ = strconv.Atoi(m[1])
		msg = msg[len(m[0]):]
	} else {
		msg = strings.TrimPrefix(msg, "yaml: ")
	}
	// The library counts parser errors' lines from 0 and scanner errors'
	// from 1, and leaves out line 0 of either.
	switch {
	case parserProblems[msg]:
		p.Line++
	case p.Line == 0 && (strings.HasPrefix(msg, "found ") || strings.HasPrefix(msg, "did not find ") || strings.HasPrefix(msg, "could not find ")):
		p.Line = 1
	}
	if strings.Contains(msg, "cannot start any token") {
		if l := firstTabIndent(data); l > 0 {
			if p.Line == 0 {
				p.Line = l
			}
			msg += " (a tab in the indentation: YAML indents with spaces only)"
		}
	}
	p.Msg = "invalid YAML: " + msg
	return p
}

// parserProblems are the syntax errors that the YAML library's parser (as
// opposed to its scanner) reports.
var parserProblems = map[string]bool{
	"did not find expected ',' or ']'":       true,
	"did not find expected ',' or '}'":       true,
	"did not find expected '-' indicator":    true,
	"did not find expected <document start>": true,
	"did not find expected <stream-start>":   true,
	"did not find expected key":              true,
	"did not find expected node content":     true,
	"found duplicate %TAG directive":         true,
	"found duplicate %YAML directive":        true,
	"found incompatible YAML document":       true,
	"found undefined tag handle":             true,
}

// firstTabIndent returns the 1-based number of the first line whose
// indentation holds a tab, or 0.
func firstTabIndent(data []byte) int {
	for i, line := range bytes.Split(data, []byte("\n")) {
		indent := line[:len(line)-len(bytes.TrimLeft(line, " \t"))]
		if bytes.IndexByte(indent, '\t') >= 0 {
			return i + 1
		}
	}
	return 0
}

var durationType = reflect.TypeFor[time.Duration]()

// decoder maps a YAML node tree onto Go values through their `yaml:"name"`
// struct tags, strictly, recording every problem instead of stopping at the
// first. Its depth is bounded by the Go types, not by the input: unknown keys
// are not descended into and aliases are refused.
type decoder struct {
	origin *Origin
}

// fail records a problem with the value at key, at line.
func (d *decoder) fail(line int, key, format string, args ...any) {
	d.origin.read = append(d.origin.read, Problem{File: d.origin.File, Line: line, Key: key, Msg: fmt.Sprintf(format, args...)})
	d.origin.bad[key] = true
}

// decode sets v from n; key is v's path, for messages.
func (d *decoder) decode(n *yaml.Node, v reflect.Value, key string) {
	if n.Kind == yaml.AliasNode {
		d.fail(n.Line, key, "YAML aliases (*%s) are not supported; write the value out", n.Value)
		return
	}
	if isNull(n) {
		return // "key:" or "key: null" leaves the field unset
	}
	if n.Kind == yaml.ScalarNode && !scalarTags[n.ShortTag()] {
		d.fail(n.Line, key, "unsupported YAML tag %s; write a plain value", n.Tag)
		return
	}
	t := v.Type()
	switch {
	case t == durationType:
		d.duration(n, v, key)
	case t.Kind() == reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(t.Elem()))
		}
		d.decode(n, v.Elem(), key)
	case t.Kind() == reflect.Struct:
		d.object(n, v, key)
	case t.Kind() == reflect.Map && t.Key().Kind() == reflect.String:
		d.dict(n, v, key)
	case t.Kind() == reflect.Slice:
		d.list(n, v, key)
	case t.Kind() == reflect.String:
		if n.Kind != yaml.ScalarNode {
			d.fail(n.Line, key, "expected a string, got %s", describe(n))
			return
		}
		v.SetString(n.Value)
	case t.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(n.Value)
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" || err != nil {
			d.fail(n.Line, key, "expected true or false, got %s", describe(n))
			return
		}
		v.SetBool(b)
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Int64:
		if i, ok := d.number(n, key); ok {
			if v.OverflowInt(i) {
				d.fail(n.Line, key, "number %s is out of range", n.Value)
				return
			}
			v.SetInt(i)
		}
	case t.Kind() >= reflect.Uint && t.Kind() <= reflect.Uint64:
		if i, ok := d.number(n, key); ok {
			if i < 0 || v.OverflowUint(uint64(i)) {
				d.fail(n.Line, key, "number %s is out of range", n.Value)
				return
			}
			v.SetUint(uint64(i))
		}
	default:
		d.fail(n.Line, key, "cannot be set from a config file (field type %s)", t)
	}
}

// scalarTags are the resolved tags of plain YAML values; anything else
// (!!binary, custom !tags) is refused rather than guessed at.
var scalarTags = map[string]bool{
	"!!str": true, "!!int": true, "!!float": true, "!!bool": true, "!!null": true, "!!timestamp": true,
}

func isNull(n *yaml.Node) bool {
	return n.Kind == 0 || n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// describe names what a node holds, for "expected X, got Y" messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return strconv.Quote(n.Value)
	case yaml.AliasNode:
		return "an alias"
	}
	return "nothing"
}

// number parses a whole-number scalar: decimal, or with 0x, 0o or 0b.
func (d *decoder) number(n *yaml.Node, key string) (int64, bool) {
	tag := n.ShortTag()
	if n.Kind != yaml.ScalarNode || tag != "!!int" && tag != "!!float" {
		d.fail(n.Line, key, "expected a whole number, got %s", describe(n))
		return 0, false
	}
	s := strings.ReplaceAll(n.Value, "_", "")
	digits := strings.TrimLeft(s, "+-")
	base := 10
	if len(digits) > 1 && digits[0] == '0' && strings.ContainsAny(digits[1:2], "xXoObB") {
		base = 0
	}
	i, err := strconv.ParseInt(s, base, 64)
	switch {
	case errors.Is(err, strconv.ErrRange):
		d.fail(n.Line, key, "number %s is out of range", n.Value)
		return 0, false
	case err != nil:
		d.fail(n.Line, key, "expected a whole number, got %s", describe(n))
		return 0, false
	}
	return i, true
}

func (d *decoder) duration(n *yaml.Node, v reflect.Value, key string) {
	if n.Kind != yaml.ScalarNode {
		d.fail(n.Line, key, "expected a duration such as 15s, got %s", describe(n))
		return
	}
	dur, err := time.ParseDuration(n.Value)
	if err != nil {
		d.fail(n.Line, key, "invalid duration %q (use e.g. 15s)", n.Value)
		return
	}
	v.SetInt(int64(dur))
}

func (d *decoder) list(n *yaml.Node, v reflect.Value, key string) {
	if n.Kind != yaml.SequenceNode {
		hint := ""
		if n.Kind == yaml.ScalarNode {
			hint = fmt.Sprintf(" (write a one-item list as [%s])", n.Value)
		}
		d.fail(n.Line, key, "expected a list, got %s%s", describe(n), hint)
		return
	}
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, item := range n.Content {
		itemKey := fmt.Sprintf("%s[%d]", key, i)
		d.origin.lines[itemKey] = item.Line
		d.decode(item, s.Index(i), itemKey)
	}
	v.Set(s)
}

// entries walks the key/value pairs of a mapping, refusing non-string keys,
// merge keys and duplicates, and calls f for the others with the key's path.
func (d *decoder) entries(n *yaml.Node, key string, f func(name string, k, val *yaml.Node, path string)) bool {
	if n.Kind != yaml.MappingNode {
		what := "a mapping"
		if key == "services" {
			what = "a mapping of service names"
		}
		d.fail(n.Line, key, "expected %s, got %s", what, describe(n))
		return false
	}
	seen := make(map[string]int, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
			d.fail(k.Line, joinKey(key, k.Value), "merge keys (<<) are not supported; write the keys out")
			d.origin.bad[key] = true // its keys are unknown, so do not report them missing
			continue
		}
		if k.Kind != yaml.ScalarNode {
			d.fail(k.Line, key, "expected a plain key, got %s", describe(k))
			continue
		}
		path := joinKey(key, k.Value)
		if first, dup := seen[k.Value]; dup {
			d.fail(k.Line, path, "duplicate key (first at line %d)", first)
			continue
		}
		seen[k.Value] = k.Line
		d.origin.lines[path] = k.Line
		f(k.Value, k, val, path)
	}
	return true
}

// dict decodes a mapping onto a map[string]T.
func (d *decoder) dict(n *yaml.Node, v reflect.Value, key string) {
	t := v.Type()
	m := reflect.MakeMapWithSize(t, len(n.Content)/2)
	ok := d.entries(n, key, func(name string, _, val *yaml.Node, path string) {
		elem := reflect.New(t.Elem()).Elem()
		d.decode(val, elem, path)
		m.SetMapIndex(reflect.ValueOf(name).Convert(t.Key()), elem)
	})
	if ok {
		v.Set(m)
	}
}

// object decodes a mapping onto a struct through its yaml tags.
func (d *decoder) object(n *yaml.Node, v reflect.Value, key string) {
	fields := yamlFields(v.Type())
	d.entries(n, key, func(name string, k, val *yaml.Node, path string) {
		for _, f := range fields {
			if f.name == name {
				d.decode(val, v.FieldByIndex(f.index), path)
				return
			}
		}
		known := make([]string, len(fields))
		for i, f := range fields {
			known[i] = f.name
		}
		d.fail(k.Line, path, "unknown key (known: %s)", strings.Join(known, ", "))
		d.origin.unknown[key] = append(d.origin.unknown[key], name)
	})
}

type yamlField struct {
	name  string
	index []int
}

// yamlFields lists the settable fields of struct type t in declaration
// order, named by their yaml tag (or lower-cased name); `yaml:"-"` fields and
// unexported ones are left out.
func yamlFields(t reflect.Type) []yamlField {
	var fields []yamlField
	for i := range t.NumField() {
		sf := t.Field(i)
		if !sf.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(sf.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = strings.ToLower(sf.Name)
		}
		fields = append(fields, yamlField{name: name, index: sf.Index})
	}
	return fields
}
