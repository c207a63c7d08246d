package egress

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// MaxResponse bounds an HTTP proxy's answer to CONNECT, status line and
// headers together: a proxy that sends more is cut off.
const MaxResponse = 16 << 10

// maxStatusLine bounds the status line alone (the reader's buffer).
const maxStatusLine = 4 << 10

// ErrResponseTooLong is returned for a CONNECT response over MaxResponse.
var ErrResponseTooLong = errors.New("the proxy's answer to CONNECT is too long")

// connectHTTP asks the HTTP proxy p, on c, to CONNECT to addr, within
// ctx, and returns the connection to addr (c itself unless the proxy sent
// bytes past its headers). It does not close c.
func connectHTTP(ctx context.Context, c net.Conn, p *url.URL, addr string) (net.Conn, error) {
	done := bound(ctx, c)
	req := "CONNECT " + addr + " HTTP/1.1\r\nHost: " + addr + "\r\n"
	if p.User != nil {
		pass, _ := p.User.Password()
		req += "Proxy-Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte(p.User.Username()+":"+pass)) + "\r\n"
	}
	req += "\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		return nil, fmt.Errorf("send CONNECT %s to the proxy at %s: %w", addr, p.Host, done(err))
	}
	br := bufio.NewReaderSize(c, maxStatusLine)
	status, reason, err := ReadConnectResponse(br)
	if err != nil {
		return nil, fmt.Errorf("the proxy at %s, asked to CONNECT to %s: %w", p.Host, addr, done(err))
	}
	if err := done(nil); err != nil {
		return nil, fmt.Errorf("the proxy at %s, asked to CONNECT to %s: %w", p.Host, addr, err)
	}
	if status < 200 || status > 299 {
		return nil, &RefusedError{Proxy: p.Host, Target: addr, Status: status, Reason: reason,
			// tinyproxy answers a wrong password with 401.
			Auth: status == 407 || status == 401, Credentials: p.User != nil}
	}
	if n := br.Buffered(); n > 0 {
		// The proxy's reader took bytes of the tunnel's stream with the
		// headers: they are read first.
		rest, _ := br.Peek(n)
		return &prefixConn{Conn: c, r: io.MultiReader(bytes.NewReader(bytes.Clone(rest)), c)}, nil
	}
	return c, nil
}

// bound makes c's reads and writes end when ctx does, and returns the
// function that undoes it: done(err) returns err, or a timeout error in
// its place when ctx ended or its deadline passed meanwhile.
func bound(ctx context.Context, c net.Conn) func(error) error {
	if d, ok := ctx.Deadline(); ok {
		c.SetDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	return func(err error) error {
		stopped := stop()
		c.SetDeadline(time.Time{})
		if !stopped || ctx.Err() != nil || errors.Is(err, os.ErrDeadlineExceeded) {
			return timeoutError(ctx)
		}
		return err
	}
}

// timeoutError is the error of a proxy that did not answer before ctx
// ended: it wraps context.DeadlineExceeded (or ctx's own error).
func timeoutError(ctx context.Context) error {
	cause := ctx.Err()
	if cause == nil || errors.Is(cause, context.DeadlineExceeded) {
		return fmt.Errorf("no answer within the dial timeout: %w", context.DeadlineExceeded)
	}
	return fmt.Errorf("dial abandoned: %w", cause)
}

// ReadConnectResponse reads an HTTP/1.x response's status line and
// headers from r, at most MaxResponse bytes, and returns the status code
// and text. It reads nothing past the blank line that ends the headers
// beyond what r buffers; a response to CONNECT has no body to read.
func ReadConnectResponse(r *bufio.Reader) (int, string, error) {
	line, err := r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		return 0, "", ErrResponseTooLong
	}
	if err != nil {
		if len(line) == 0 {
			return 0, "", fmt.Errorf("no answer: %w", eofAsClosed(err))
		}
		return 0, "", fmt.Errorf("the answer ends in its status line: %w", eofAsClosed(err))
	}
	status, reason, ok := parseStatusLine(string(line))
	if !ok {
		return 0, "", fmt.Errorf("the answer is not HTTP (it starts %s): is it a SOCKS proxy? then write socks5:// in the proxy URL", quoteStart(line))
	}
	total := len(line)
	atStart := true
	for {
		line, err := r.ReadSlice('\n')
		total += len(line)
		if total > MaxResponse {
			return 0, "", ErrResponseTooLong
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			atStart = false
			continue
		}
		if err != nil {
			return 0, "", fmt.Errorf("the answer ends in its headers: %w", eofAsClosed(err))
		}
		if atStart && (len(line) == 1 || (len(line) == 2 && line[0] == '\r')) {
			return status, reason, nil
		}
		atStart = true
	}
}

// parseStatusLine parses "HTTP/1.x NNN text\r\n".
func parseStatusLine(s string) (int, string, bool) {
	s = strings.TrimRight(s, "\r\n")
	if !strings.HasPrefix(s, "HTTP/1.") || len(s) < len("HTTP/1.x NNN") || s[8] != ' ' {
		return 0, "", false
	}
	code := s[9:12]
	for _, ch := range code {
		if ch < '0' || ch > '9' {
			return 0, "", false
		}
	}
	if len(s) > 12 && s[12] != ' ' {
		return 0, "", false
	}
	n, _ := strconv.Atoi(code)
	reason := ""
	if len(s) > 13 {
		reason = strings.TrimSpace(s[13:])
	}
	return n, strings.ToValidUTF8(reason, "?"), true
}

// quoteStart quotes the start of b for a message.
func quoteStart(b []byte) string {
	if len(b) > 32 {
		return strconv.QuoteToASCII(string(b[:32])) + "…"
	}
	return strconv.QuoteToASCII(string(b))
}

func eofAsClosed(err error) error {
	if errors.Is(err, io.EOF) {
		return errors.New("the proxy closed the connection")
	}
	return err
}

// prefixConn is a connection whose first bytes were already read into r.
type prefixConn struct {
	net.Conn
	r io.Reader
}

func (c *prefixConn) Read(b []byte) (int, error) { return c.r.Read(b) }

// CloseWrite half-closes the connection underneath, when it can.
func (c *prefixConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.New("egress: the connection cannot half-close")
}
