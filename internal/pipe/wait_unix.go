//go:build unix

package pipe

import (
	"io"
	"net"
	"os"
	"syscall"
)

// tcpSource reads a TCP connection through its raw descriptor, so that
// a buffer is borrowed from the pool only once the socket has bytes: the
// read is tried with a buffer taken at that moment, and on EAGAIN the
// buffer goes back before the goroutine parks on the runtime's poller.
type tcpSource struct {
	c     *net.TCPConn
	rc    syscall.RawConn
	ready func(fd uintptr) bool // t.read, allocated once
	try   func(fd uintptr)      // read without parking (tryRead)

	// Set by read for its caller.
	bp    *[]byte
	n     int
	err   error
	again bool
}

func newTCPSource(c *net.TCPConn) *tcpSource {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil
	}
	t := &tcpSource{c: c, rc: rc}
	t.ready = t.read
	t.try = func(fd uintptr) { t.again = !t.read(fd) }
	return t
}

func (t *tcpSource) read(fd uintptr) bool {
	if t.bp == nil {
		t.bp = buffers.Get().(*[]byte)
	}
	for {
		n, err := syscall.Read(int(fd), *t.bp)
		switch err {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			buffers.Put(t.bp)
			t.bp = nil
			return false
		}
		t.n, t.err = max(n, 0), err
		return true
	}
}

// Read fills the buffer it holds, or a newly borrowed one once bytes are
// there, and returns it with the count; it returns io.EOF at end of
// stream. The caller gives the buffer back (or passes it to the next
// Read to be filled again).
func (t *tcpSource) Read(bp *[]byte) (*[]byte, int, error) {
	t.bp, t.n, t.err = bp, 0, nil
	if err := t.rc.Read(t.ready); err != nil {
		return t.bp, 0, err // closed, or a deadline
	}
	switch {
	case t.err != nil:
		return t.bp, 0, t.opError()
	case t.n == 0:
		return t.bp, 0, io.EOF
	}
	return t.bp, t.n, nil
}

// opError wraps the error of the last read as net.Conn.Read would.
func (t *tcpSource) opError() error {
	return &net.OpError{Op: "read", Net: "tcp", Source: t.c.LocalAddr(), Addr: t.c.RemoteAddr(),
		Err: os.NewSyscallError("read", t.err)}
}
