//go:build linux

package netns

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Socket is one line of ss's output.
type Socket struct {
	Proto       string // tcp or udp
	State       string // LISTEN, ESTAB, UNCONN, ...
	RecvQ       int    // bytes received and not yet read by the process
	SendQ       int    // bytes written by the process and not yet acknowledged
	Local, Peer string // address:port; IPv4-mapped IPv6 addresses as plain IPv4
	Users       []SocketUser
}

// SocketUser is a process holding a socket.
type SocketUser struct {
	Name string
	Pid  int
}

func (s Socket) String() string {
	return fmt.Sprintf("%s %s %s -> %s %v", s.Proto, s.State, s.Local, s.Peer, s.Users)
}

// HeldBy reports whether process pid holds the socket.
func (s Socket) HeldBy(pid int) bool {
	for _, u := range s.Users {
		if u.Pid == pid {
			return true
		}
	}
	return false
}

var ssUser = regexp.MustCompile(`\("([^"]*)",pid=(\d+),`)

// Sockets lists the namespace's TCP and UDP sockets, listening or not,
// with the processes that hold them, as `ss -tuanp` shows them.
func (n *Namespace) Sockets() ([]Socket, error) {
	var all []Socket
	for _, proto := range []string{"tcp", "udp"} {
		socks, err := n.ss(proto, "-a", "-p", "--"+proto)
		if err != nil {
			return nil, err
		}
		all = append(all, socks...)
	}
	return all, nil
}

// TCPOn lists the namespace's TCP sockets on local port port, in every
// state, without the processes that hold them: one quick dump of ss (the
// processes make Sockets read every process's files first, long enough
// for a busy port to change meanwhile). A LISTEN socket's RecvQ is its
// queue of connections that no process has accepted yet.
func (n *Namespace) TCPOn(port int) ([]Socket, error) {
	return n.ss("tcp", "-a", "-t", "sport", "=", ":"+strconv.Itoa(port))
}

// ss runs ss -H -n with args, which list proto's sockets with their
// state, and parses its lines.
func (n *Namespace) ss(proto string, args ...string) ([]Socket, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := n.Run(ctx, append([]string{"ss", "-H", "-n"}, args...)...)
	if err != nil {
		return nil, err
	}
	var socks []Socket
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		s := Socket{Proto: proto, State: f[0], Local: unmap(f[3]), Peer: unmap(f[4])}
		s.RecvQ, _ = strconv.Atoi(f[1])
		s.SendQ, _ = strconv.Atoi(f[2])
		for _, m := range ssUser.FindAllStringSubmatch(line, -1) {
			pid, _ := strconv.Atoi(m[2])
			s.Users = append(s.Users, SocketUser{Name: m[1], Pid: pid})
		}
		socks = append(socks, s)
	}
	return socks, nil
}

// unmap turns ss's "[::ffff:198.18.1.2]:80" into "198.18.1.2:80".
func unmap(addr string) string {
	if rest, ok := strings.CutPrefix(addr, "[::ffff:"); ok {
		return strings.Replace(rest, "]", "", 1)
	}
	return addr
}
