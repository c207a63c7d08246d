package config

import (
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/sallyport/sallyport/internal/wire"
)

// checker collects the semantic problems of one configuration.
type checker struct {
	origin Origin
	found  Problems
}

// add records a problem with the value at key, placed by the origin, unless
// the value could not even be decoded (that problem is reported already).
func (c *checker) add(key, format string, args ...any) {
	if c.origin.covered(key) {
		return
	}
	p := c.origin.place(key)
	p.Msg = fmt.Sprintf(format, args...)
	c.found = append(c.found, p)
}

// require records that the key leaf of the mapping at parent is missing,
// unless an unknown key there looks like a misspelling of it.
func (c *checker) require(parent, leaf, what string) {
	if c.origin.misspelt(parent, leaf) {
		return
	}
	c.add(joinKey(parent, leaf), "required: %s", what)
}

// result merges the problems found while reading with the semantic ones,
// in file order.
func (c *checker) result() error {
	all := append(append(Problems(nil), c.origin.read...), c.found...)
	return all.asError()
}

func (c *checker) positive(key string, d time.Duration) {
	if d <= 0 {
		c.add(key, "must be greater than zero (got %s)", d)
	}
}

// keepalive checks that a peer gets more than one interval to answer.
func (c *checker) keepalive(prefix string, interval, timeout time.Duration) {
	c.positive(prefix+".keepalive_interval", interval)
	c.positive(prefix+".keepalive_timeout", timeout)
	if interval > 0 && timeout > 0 && timeout <= interval {
		c.add(prefix+".keepalive_timeout", "must be longer than keepalive_interval (got %s, interval %s)", timeout, interval)
	}
}

func (c *checker) log(l Log) {
	switch l.Format {
	case "text", "json":
	default:
		c.add("log.format", "unknown format %q (use text or json)", l.Format)
	}
	switch l.Level {
	case "debug", "info", "warn", "error":
	default:
		c.add("log.level", "unknown level %q (use debug, info, warn or error)", l.Level)
	}
}

func (c *checker) serviceName(name string) {
	if !wire.ValidName(name) {
		c.add("services."+name, "invalid service name %q (%s)", name, wire.NameRule)
	}
}

// inFileOrder returns the keys of m sorted by the line they were written on
// in the file, then by name, so that problems come out in file order.
func inFileOrder[T any](o Origin, m map[string]T) []string {
	names := make([]string, 0, len(m))
	for name := range m {
		names = append(names, name)
	}
	sort.Slice(names, func(i, j int) bool {
		li, lj := o.Line("services."+names[i]), o.Line("services."+names[j])
		if li != lj {
			return li < lj
		}
		return names[i] < names[j]
	})
	return names
}

// addrUse says whether an address is listened on or dialled.
type addrUse int

const (
	listenAddr addrUse = iota // port 0 allowed (pick a free port), host optional
	dialAddr                  // host and port 1-65535 required
)

// checkAddr returns what is wrong with addr as a host:port, or "".
func checkAddr(addr string, use addrUse) string {
	example := "127.0.0.1:5432"
	if use == listenAddr {
		example = ":15432"
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Sprintf("invalid address %q (use host:port, e.g. %s)", addr, example)
	}
	if port == "" {
		return fmt.Sprintf("missing port in %q (use host:port, e.g. %s)", addr, example)
	}
	if strings.Trim(port, "0123456789") != "" || len(port) > 5 {
		return fmt.Sprintf("invalid port %q in %q (use a number 1-65535)", port, addr)
	}
	n, _ := strconv.Atoi(port)
	switch {
	case n > 65535 && use == listenAddr:
		return fmt.Sprintf("port %d in %q is out of range (use 1-65535, or 0 to pick a free port)", n, addr)
	case n > 65535:
		return fmt.Sprintf("port %d in %q is out of range (use 1-65535)", n, addr)
	case n == 0 && use == dialAddr:
		return fmt.Sprintf("port 0 in %q cannot be dialled (use 1-65535)", addr)
	}
	if host == "" {
		if use == dialAddr {
			return fmt.Sprintf("missing host in %q (use host:port, e.g. %s)", addr, example)
		}
		return ""
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return ""
	}
	if !validHostname(host) {
		return fmt.Sprintf("invalid host %q in %q (use an IP address or a DNS name)", host, addr)
	}
	return ""
}

// validHostname reports whether h is a plausible DNS name: dot-separated
// labels of letters, digits, '-' and '_', each 1 to 63 long.
func validHostname(h string) bool {
	if len(h) > 253 {
		return false
	}
	for label := range strings.SplitSeq(strings.TrimSuffix(h, "."), ".") {
		if label == "" || len(label) > 63 || strings.HasPrefix(label, "-") {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return false
			}
		}
	}
	return true
}

// isLoopback reports whether the host of the listen address addr is
// loopback-only. An empty host listens on every interface.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// listener is one listen address of a configuration, by key.
type listener struct {
	key, addr string
}

// socketKey splits a valid listen address into its port and its host in a
// canonical form, with "" standing for every interface.
func socketKey(addr string) (port int, host string) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, ""
	}
	port, _ = strconv.Atoi(p)
	if ip, err := netip.ParseAddr(h); err == nil {
		if ip.IsUnspecified() {
			return port, ""
		}
		return port, ip.Unmap().String()
	}
	return port, strings.ToLower(h)
}

// listeners checks a set of valid listen addresses for two that would
// contend for one socket (the same non-zero port on the same host, or on
// every interface), reporting the later one. It takes linear time, so that
// a large file cannot make it slow.
func (c *checker) listeners(ls []listener) {
	type portUse struct {
		first  *listener            // first listener on the port
		any    *listener            // first listener on every interface
		byHost map[string]*listener // first listener per host
	}
	ports := make(map[int]*portUse)
	for i := range ls {
		l := &ls[i]
		port, host := socketKey(l.addr)
		if port == 0 {
			continue // each asks for a free port of its own
		}
		u := ports[port]
		if u == nil {
			u = &portUse{first: l, byHost: make(map[string]*listener)}
			ports[port] = u
		}
		var clash *listener
		switch {
		case u.first == l:
		case host == "":
			clash = u.first
		case u.any != nil:
			clash = u.any
		default:
			clash = u.byHost[host]
		}
		if clash != nil {
			c.add(l.key, "address %q is already used by %s (%q)", l.addr, clash.key, clash.addr)
			continue
		}
		if host == "" && u.any == nil {
			u.any = l
		}
		if _, ok := u.byHost[host]; !ok {
			u.byHost[host] = l
		}
	}
}
