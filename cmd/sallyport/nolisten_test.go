package main_test

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The connector opens no listening socket, even while it carries a stream:
// every socket the process owns is an outbound TCP connection, to the
// edge's tunnel port or to the back-end. The same inspection of the edge
// finds its listeners, so it would see one in the connector.
func TestConnectorOwnsNoListeningSocket(t *testing.T) {
	s := startSite(t, nil)
	live := dialClient(t, s.edge.services["echo"])
	roundTrip(t, live, "a live stream")
	s.echo.WaitOpen(t, 1, 5*time.Second)

	socks := socketsOf(t, s.conn.Pid())
	tunnelPort, echoPort := portOf(t, s.edge.tunnel), portOf(t, s.echo.Addr())
	toEdge, toBackend := 0, 0
	for _, k := range socks {
		switch {
		case k.listening():
			t.Errorf("the connector (pid %d) has a listening socket: %s", s.conn.Pid(), k)
		case k.proto == "unix":
			// A connected unix socket (none expected) listens for no one.
		case k.proto == "tcp" && k.state == tcpEstablished && k.remotePort == tunnelPort:
			toEdge++
		case k.proto == "tcp" && k.state == tcpEstablished && k.remotePort == echoPort:
			toBackend++
		default:
			t.Errorf("the connector owns a socket that is neither its tunnel nor a back-end connection: %s", k)
		}
	}
	if toEdge != 1 || toBackend != 1 {
		t.Errorf("the connector owns %d connections to the edge's tunnel port and %d to the back-end, want 1 and 1; sockets:\n%v", toEdge, toBackend, socks)
	}

	// The check can fail: the edge, seen the same way, listens.
	want := map[int]string{tunnelPort: "tunnel", portOf(t, s.edge.admin): "admin", portOf(t, s.edge.services["echo"]): "echo"}
	for _, k := range socketsOf(t, s.edge.Pid()) {
		if k.proto == "tcp" && k.listening() {
			delete(want, k.localPort)
		}
	}
	if len(want) != 0 {
		t.Errorf("the inspection found no listening socket on the edge's ports %v: it would not see one in the connector either", want)
	}
	roundTrip(t, live, "still live after the inspection")
}

const (
	tcpEstablished = 0x01
	tcpListen      = 0x0A
	unixAcceptCon  = 0x10000 // __SO_ACCEPTCON in /proc/net/unix: a listening socket
)

// socket is one socket a process owns, as /proc describes it.
type socket struct {
	proto               string // tcp, udp or unix
	localPort           int
	remotePort          int
	state               int // TCP state, or the flags of a unix socket
	inode               string
	localHex, remoteHex string
	unixPath            string
}

// listening reports whether the socket accepts or receives from anyone:
// a TCP LISTEN socket, an unconnected UDP socket, a listening unix socket.
func (k socket) listening() bool {
	switch k.proto {
	case "tcp":
		return k.state == tcpListen
	case "udp":
		return k.remotePort == 0
	case "unix":
		return k.state&unixAcceptCon != 0
	}
	return false
}

func (k socket) String() string {
	if k.proto == "unix" {
		return fmt.Sprintf("unix inode %s flags %#x path %q", k.inode, k.state, k.unixPath)
	}
	return fmt.Sprintf("%s %s -> %s state %#02x inode %s", k.proto, k.localHex, k.remoteHex, k.state, k.inode)
}

// socketsOf lists the sockets process pid owns: the inodes behind its
// file descriptors, looked up in its network namespace's tables.
func socketsOf(t *testing.T, pid int) []socket {
	t.Helper()
	fdDir := fmt.Sprintf("/proc/%d/fd", pid)
	fds, err := os.ReadDir(fdDir)
	if err != nil {
		t.Fatalf("list the file descriptors of pid %d: %v", pid, err)
	}
	owned := map[string]bool{}
	for _, fd := range fds {
		target, err := os.Readlink(filepath.Join(fdDir, fd.Name()))
		if err != nil {
			continue // closed meanwhile
		}
		if inode, ok := strings.CutPrefix(target, "socket:["); ok {
			owned[strings.TrimSuffix(inode, "]")] = true
		}
	}
	if len(owned) == 0 {
		t.Fatalf("pid %d owns no socket at all: the inspection is not seeing it", pid)
	}
	var out []socket
	found := map[string]bool{}
	for _, table := range []struct{ file, proto string }{
		{"tcp", "tcp"}, {"tcp6", "tcp"}, {"udp", "udp"}, {"udp6", "udp"}, {"unix", "unix"},
	} {
		for _, k := range readSocketTable(t, fmt.Sprintf("/proc/%d/net/%s", pid, table.file), table.proto) {
			if owned[k.inode] {
				out = append(out, k)
				found[k.inode] = true
			}
		}
	}
	for inode := range owned {
		if !found[inode] {
			// Netlink and other families are not in these tables.
			t.Logf("pid %d: socket inode %s is not a tcp, udp or unix socket", pid, inode)
		}
	}
	return out
}

// readSocketTable parses /proc/PID/net/{tcp,tcp6,udp,udp6,unix}.
func readSocketTable(t *testing.T, path, proto string) []socket {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("read the socket table: %v", err)
	}
	defer f.Close()
	var out []socket
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if proto == "unix" {
			// Num RefCount Protocol Flags Type St Inode [Path]
			if len(fs) < 7 {
				continue
			}
			flags, _ := strconv.ParseInt(fs[3], 16, 64)
			k := socket{proto: proto, state: int(flags), inode: fs[6]}
			if len(fs) > 7 {
				k.unixPath = fs[7]
			}
			out = append(out, k)
			continue
		}
		// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
		if len(fs) < 10 {
			continue
		}
		st, _ := strconv.ParseInt(fs[3], 16, 64)
		out = append(out, socket{
			proto: proto, localHex: fs[1], remoteHex: fs[2], state: int(st), inode: fs[9],
			localPort: hexPort(fs[1]), remotePort: hexPort(fs[2]),
		})
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return out
}

// hexPort returns the port of an "ADDRHEX:PORTHEX" address from /proc/net.
func hexPort(a string) int {
	_, p, _ := strings.Cut(a, ":")
	n, _ := strconv.ParseInt(p, 16, 32)
	return int(n)
}

// The edge listens exactly where its configuration says, and nowhere
// else: a service reached only through a shared listener (by Host) gets
// no port of its own, which would skip that listener's checks.
func TestEdgeListensOnlyWhereConfigured(t *testing.T) {
	dir := t.TempDir()
	httpAddr := freePort(t)
	cfg := filepath.Join(dir, "edge.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("listeners:\n  - kind: http\n    listen: %s\nservices:\n  web:\n    hosts: [web.test]\n", httpAddr)), 0o600)
	e := startEdge(t, filepath.Join(dir, "edge"), []string{"echo"}, "--config", cfg)
	want := map[int]string{
		portOf(t, e.tunnel): "tunnel", portOf(t, e.admin): "admin API",
		portOf(t, e.services["echo"]): "service echo", portOf(t, httpAddr): "http listener",
	}
	unixListeners := 0
	for _, k := range socketsOf(t, e.Pid()) {
		switch {
		case !k.listening():
		case k.proto == "unix" && strings.HasSuffix(k.unixPath, "/admin.sock"):
			unixListeners++
		case k.proto == "tcp" && want[k.localPort] != "":
			delete(want, k.localPort)
		default:
			t.Errorf("the edge (pid %d) listens where nothing configures it to: %s", e.Pid(), k)
		}
	}
	if len(want) != 0 {
		t.Errorf("the edge does not listen on its configured ports %v", want)
	}
	if unixListeners != 1 {
		t.Errorf("the edge has %d admin sockets, want 1", unixListeners)
	}
	st := e.status(t)
	if !strings.Contains(st.text, "web") {
		t.Fatalf("status does not show the service web:\n%s", st.text)
	}
	for _, line := range strings.Split(st.text, "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "web" && f[1] != "-" {
			t.Errorf("status shows a listen address for web, which has none: %q", line)
		}
	}
}
