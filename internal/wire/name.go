package wire

import (
	"errors"
	"fmt"
)

// maxName bounds a name's length: a DNS label's.
const maxName = 63

// NameRule says in words what ValidName accepts, for error messages.
const NameRule = "use up to 63 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit"

// ValidName reports whether s can name a service or a connector: 1 to 63
// lowercase ASCII letters, digits, '.', '_' and '-', starting with a letter
// or a digit. Such names travel in this protocol (hellos, stream headers,
// enrollment) and are safe in a certificate, a log line, a metric label, a
// file name and a DNS label.
func ValidName(s string) bool { return CheckName(s) == nil }

// CheckName is ValidName with a reason: nil if s is a valid name.
func CheckName(s string) error {
	if s == "" {
		return errors.New("missing; want a name such as site-a")
	}
	if len(s) > maxName {
		return fmt.Errorf("%d characters is too long; at most %d", len(s), maxName)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || c != '.' && c != '_' && c != '-') {
			return fmt.Errorf("%q: %s", s, NameRule)
		}
	}
	return nil
}
