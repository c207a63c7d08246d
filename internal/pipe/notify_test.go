package pipe_test

import (
	"bytes"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/loopback"
	"github.com/sallyport/sallyport/internal/pipe"
)

// mailbox is a connection that says when it is readable, as a tunnel
// stream does (pipe.Notifier): the test puts bytes in, and they are read
// with TryRead only. What the exchange writes to it goes to the peer end
// of a net.Pipe.
type mailbox struct {
	net.Conn // writes, and the rest of net.Conn

	// box guards what is there to read, and who to tell.
	box struct {
		sync.Mutex
		buf    []byte
		eof    bool
		closed bool
		notify func()
	}
}

var _ pipe.Notifier = (*mailbox)(nil)

// put adds bytes (or, with none, the end of the stream) and tells the
// function NotifyRead left, if any.
func (m *mailbox) put(b []byte) {
	m.box.Lock()
	m.box.buf = append(m.box.buf, b...)
	m.box.eof = m.box.eof || len(b) == 0
	f := m.box.notify
	m.box.notify = nil
	m.box.Unlock()
	if f != nil {
		f()
	}
}

// armed reports whether a NotifyRead function waits for bytes.
func (m *mailbox) armed() bool {
	m.box.Lock()
	defer m.box.Unlock()
	return m.box.notify != nil
}

func (m *mailbox) NotifyRead(f func()) {
	m.box.Lock()
	if f != nil && (len(m.box.buf) > 0 || m.box.eof || m.box.closed) {
		m.box.notify = nil
		m.box.Unlock()
		f()
		return
	}
	m.box.notify = f
	m.box.Unlock()
}

func (m *mailbox) TryRead(b []byte) (int, bool, error) {
	m.box.Lock()
	defer m.box.Unlock()
	switch {
	case m.box.closed:
		return 0, false, net.ErrClosed
	case len(m.box.buf) > 0:
		n := copy(b, m.box.buf)
		m.box.buf = m.box.buf[n:]
		return n, false, nil
	case m.box.eof:
		return 0, false, io.EOF
	}
	return 0, true, nil
}

func (m *mailbox) Read([]byte) (int, error) {
	panic("a Notifier is read with TryRead only")
}

func (m *mailbox) Close() error {
	m.box.Lock()
	m.box.closed = true
	f := m.box.notify
	m.box.notify = nil
	m.box.Unlock()
	if f != nil {
		f()
	}
	return m.Conn.Close()
}

// startedWithMailbox starts an exchange between a mailbox and a TCP
// connection, both directions read on readiness, with copiers that
// linger 1ms; it returns the mailbox, the peer of its writes, the TCP
// peer, the exchange and its result channel.
func startedWithMailbox(t *testing.T) (m *mailbox, fromM net.Conn, peerTCP *net.TCPConn, x *pipe.Exchange, res chan pipe.Result) {
	t.Helper()
	mc, fromM := memPair(t)
	m = &mailbox{Conn: mc}
	peerTCP, c := loopback.Pair(t)
	res = make(chan pipe.Result, 2)
	x = pipe.StartLingering(time.Millisecond, m, c, func(r pipe.Result) { res <- r })
	return m, fromM, peerTCP, x, res
}

// A direction whose source notifies rests with its NotifyRead armed, and
// bytes that then come wake it: they reach the other side, in order, and
// the direction rests again.
func TestNotifyingSourceRestsAndWakes(t *testing.T) {
	m, _, peerTCP, x, res := startedWithMailbox(t)
	peerTCP.SetDeadline(time.Now().Add(10 * time.Second))
	var sent []byte
	for i := range 3 {
		awaitResting(t, x, 2)
		if !m.armed() {
			t.Fatalf("round %d: the exchange rests but left no NotifyRead", i)
		}
		msg := randomBytes(50<<10+i, uint64(i))
		sent = append(sent, msg...)
		m.put(msg)
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(peerTCP, got); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("round %d: the TCP peer read %v, bytes equal %v", i, err, bytes.Equal(got, msg))
		}
	}
	m.put(nil) // end of stream: the TCP peer sees the half-close
	if n, err := peerTCP.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("after the mailbox's end the TCP peer read %d, %v; want EOF", n, err)
	}
	peerTCP.CloseWrite()
	r := wait(t, res)
	if r.AToB != int64(len(sent)) || r.Err != nil {
		t.Errorf("Result = %+v, want AToB %d and no error", r, len(sent))
	}
}
