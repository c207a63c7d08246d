package main

import (
	"fmt"
	"io"
	"os"

	"github.com/sallyport/sallyport/internal/config"
	"github.com/spf13/pflag"
)

// readConfig reads a role's config file with read, or returns the zero
// config when no file is named. Problems with single keys stay in the
// result's Origin for Validate, which reports them with the flags' ones.
func readConfig[T any](file string, read func(io.Reader, string) (T, error)) (T, error) {
	var zero T
	if file == "" {
		return zero, nil
	}
	f, err := os.Open(file)
	if err != nil {
		return zero, fmt.Errorf("open config: %w", err)
	}
	defer f.Close()
	return read(f, file)
}

// overlay lays the flags the user set over a config read from a file, and
// records which flag set which key, for messages.
type overlay struct {
	flags  *pflag.FlagSet
	origin *config.Origin
}

// set runs apply if flag was given on the command line.
func (o overlay) set(flag, key string, apply func()) {
	if o.flags.Changed(flag) {
		apply()
		o.origin.SetFlag(key, "--"+flag)
	}
}
