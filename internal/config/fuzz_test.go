package config

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// seedFuzz adds the example files and a few hostile shapes to the corpus.
func seedFuzz(f *testing.F, example string) {
	data, err := os.ReadFile(filepath.Join("testdata", example))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(data)
	for _, s := range []string{
		"", "~", "data_dir: /d\n---\nx: 1\n", "a: &a [*a]\n", "services: &s {x: *s}\n",
		"data_dir: [[[[[[[[[[\n", "services:\n  db:\n    <<: {listen: ':1'}\n",
		"tunnel: {keepalive_interval: 9223372036854775807ns}\n", "\xef\xbb\xbfdata_dir: /d\n",
	} {
		f.Add([]byte(s))
	}
}

// checkFuzzResult checks what holds for any input: a nil error means a valid
// config; a non-nil one is either a read failure or problems that each name
// the file.
func checkFuzzResult(t *testing.T, err error, validate func() error) {
	if err == nil {
		if verr := validate(); verr != nil {
			t.Fatalf("decoded config fails Validate: %v", verr)
		}
		return
	}
	var ps Problems
	if !errors.As(err, &ps) || len(ps) == 0 {
		t.Fatalf("error is not Problems: %v (%T)", err, err)
	}
	for _, p := range ps {
		if p.File != "fuzz.yaml" || p.Msg == "" {
			t.Fatalf("problem without file or message: %#v", p)
		}
	}
}

func FuzzDecodeEdge(f *testing.F) {
	seedFuzz(f, "edge.yaml")
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := DecodeEdge(bytes.NewReader(data), "fuzz.yaml")
		checkFuzzResult(t, err, e.Validate)
	})
}

func FuzzDecodeConnector(f *testing.F) {
	seedFuzz(f, "connector.yaml")
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := DecodeConnector(bytes.NewReader(data), "fuzz.yaml")
		checkFuzzResult(t, err, c.Validate)
	})
}
