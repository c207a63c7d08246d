//go:build linux

package netns

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Download is what one curl run in outside fetched.
type Download struct {
	Bytes    int64  // bytes received
	SHA256   string // of the bytes received
	ExitCode int    // curl's exit code: 0, or e.g. 18 (partial), 52 (empty reply), 56 (reset)
	Stderr   string
	Took     time.Duration
}

// Curl fetches url from outside with curl within timeout; extra are more
// curl options, such as --limit-rate. A curl that fails is reported in
// the Download's ExitCode; the error is for a curl that could not run. It
// may be called from any goroutine.
func (s *Stack) Curl(timeout time.Duration, url string, extra ...string) (Download, error) {
	f, err := os.CreateTemp(s.scratch, "curl")
	if err != nil {
		return Download{}, err
	}
	out := f.Name()
	f.Close()
	defer os.Remove(out)
	return s.curl(out, timeout, url, extra...)
}

// Transfer is a curl running in the background (see StartCurl).
type Transfer struct {
	out  string
	done chan struct{}
	d    Download
	err  error // set before done is closed
}

// StartCurl is Curl in the background, for a test that needs a transfer
// in flight: Received tells how far it has come, Wait how it ended. The
// test's cleanup waits for it.
func (s *Stack) StartCurl(t testing.TB, timeout time.Duration, url string, extra ...string) *Transfer {
	t.Helper()
	f, err := os.CreateTemp(s.scratch, "curl")
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	tr := &Transfer{out: f.Name(), done: make(chan struct{})}
	go func() {
		defer close(tr.done)
		tr.d, tr.err = s.curl(tr.out, timeout, url, extra...)
	}()
	t.Cleanup(func() { <-tr.done; os.Remove(tr.out) })
	return tr
}

// Received returns how many bytes curl has written so far.
func (tr *Transfer) Received() int64 {
	fi, err := os.Stat(tr.out)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// WaitReceived waits until curl has received at least n bytes, failing t
// if it ends first or timeout passes.
func (tr *Transfer) WaitReceived(t testing.TB, n int64, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for tr.Received() < n {
		select {
		case <-tr.done:
			t.Fatalf("the transfer ended after %d bytes, before %d arrived: exit %d: %s (%v)", tr.Received(), n, tr.d.ExitCode, tr.d.Stderr, tr.err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the transfer received %d bytes in %s, want %d", tr.Received(), timeout, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Wait waits for curl to end and returns what it fetched.
func (tr *Transfer) Wait() (Download, error) {
	<-tr.done
	return tr.d, tr.err
}

// curl runs curl in outside, writing what it fetches to out.
func (s *Stack) curl(out string, timeout time.Duration, url string, extra ...string) (Download, error) {
	args := append([]string{"curl", "-sS", "--max-time", strconv.Itoa(int(timeout.Seconds())), "-o", out}, extra...)
	args = append(args, url)
	ctx, cancel := context.WithTimeout(context.Background(), timeout+5*time.Second)
	defer cancel()
	cmd := s.Topo.Outside.Command(ctx, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	start := time.Now()
	err := cmd.Run()
	d := Download{Stderr: strings.TrimSpace(stderr.String()), Took: time.Since(start)}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		d.ExitCode = ee.ExitCode()
	case err != nil:
		return d, fmt.Errorf("run curl %s in outside: %w", url, err)
	}
	r, err := os.Open(out)
	if err != nil {
		return d, err
	}
	defer r.Close()
	h := sha256.New()
	d.Bytes, _ = io.Copy(h, r)
	d.SHA256 = hex.EncodeToString(h.Sum(nil))
	return d, nil
}

// WebURL is the URL of path on the edge's public web port.
func WebURL(path string) string {
	return "http://" + PublicAddr(WebPort) + path
}

// CheckHello fetches /hello.txt through the edge and returns an error
// unless it arrives intact.
func (s *Stack) CheckHello() error {
	d, err := s.Curl(10*time.Second, WebURL("/hello.txt"))
	if err != nil {
		return err
	}
	if d.ExitCode != 0 {
		return fmt.Errorf("curl /hello.txt through the edge: exit %d: %s", d.ExitCode, d.Stderr)
	}
	sum := sha256.Sum256([]byte(s.HTTP.Hello))
	if d.SHA256 != hex.EncodeToString(sum[:]) {
		return fmt.Errorf("curl /hello.txt through the edge: got %d bytes that differ from the file", d.Bytes)
	}
	return nil
}

// WikiURL is the URL of path at service "wiki", through the edge's http
// listener; curl finds WikiHost with the options WikiResolve.
func WikiURL(path string) string {
	return "http://" + net.JoinHostPort(WikiHost, strconv.Itoa(HTTPPort)) + path
}

// WikiResolve are the curl options that point WikiHost at the edge, as a
// name server would.
var WikiResolve = []string{"--resolve", fmt.Sprintf("%s:%d:%s", WikiHost, HTTPPort, DMZOutsideAddr)}

// CheckBig fetches /big.bin through the edge's web port and returns an
// error unless every byte arrives intact.
func (s *Stack) CheckBig(timeout time.Duration, extra ...string) (Download, error) {
	return s.CheckBigAt(timeout, WebURL("/big.bin"), extra...)
}

// CheckBigAt is CheckBig with the URL of /big.bin through any way in,
// such as WikiURL("/big.bin") with WikiResolve among extra.
func (s *Stack) CheckBigAt(timeout time.Duration, url string, extra ...string) (Download, error) {
	d, err := s.Curl(timeout, url, extra...)
	if err != nil {
		return d, err
	}
	if d.ExitCode != 0 {
		return d, fmt.Errorf("curl %s through the edge: exit %d after %d bytes: %s", url, d.ExitCode, d.Bytes, d.Stderr)
	}
	if d.Bytes != int64(s.HTTP.BigSize) || d.SHA256 != s.HTTP.BigSHA256 {
		return d, fmt.Errorf("curl %s through the edge: got %d bytes (sha256 %s), want %d (sha256 %s)",
			url, d.Bytes, d.SHA256, s.HTTP.BigSize, s.HTTP.BigSHA256)
	}
	return d, nil
}

// RedisCLI runs redis-cli in outside against the edge's redis port.
func (s *Stack) RedisCLI(args ...string) (string, error) {
	argv := append([]string{"redis-cli", "-h", DMZOutsideAddr, "-p", strconv.Itoa(RedisPort)}, args...)
	out, err := s.Outside(20*time.Second, argv...)
	return strings.TrimSpace(out), err
}

// CheckRedis sets a key through the edge, reads it back and returns an
// error unless the value round-trips.
func (s *Stack) CheckRedis(key, value string) error {
	if out, err := s.RedisCLI("SET", key, value); err != nil || out != "OK" {
		return fmt.Errorf("redis-cli SET through the edge: %q, %v", out, err)
	}
	if out, err := s.RedisCLI("GET", key); err != nil || out != value {
		return fmt.Errorf("redis-cli GET through the edge: %q, %v; want %q", out, err, value)
	}
	return nil
}

// SSH runs command on the trusted host through the edge's ssh port.
func (s *Stack) SSH(command string) (string, error) {
	return s.Outside(30*time.Second, s.SSHD.SSHArgs(DMZOutsideAddr, SSHPort, command)...)
}

// CheckSSH runs a command over ssh through the edge that shows where it
// ran, and returns an error unless it ran on the trusted host.
func (s *Stack) CheckSSH() error {
	out, err := s.SSH("ip -4 -o addr show dev " + ifTrusted)
	if err != nil {
		return fmt.Errorf("ssh through the edge: %w", err)
	}
	if !strings.Contains(out, " "+TrustedAddr+"/") {
		return fmt.Errorf("ssh through the edge ran its command, but not on the trusted host: %q", out)
	}
	return nil
}

// KeepServing runs check (one legitimate client request) every interval
// until stop is closed or max runs are done, and returns how many runs
// there were and the errors. It is how a test shows that a legitimate
// client keeps being served while something else goes on.
func KeepServing(stop <-chan struct{}, interval time.Duration, max int, check func() error) (runs int, errs []error) {
	for runs < max {
		if err := check(); err != nil {
			errs = append(errs, err)
		}
		runs++
		select {
		case <-stop:
			return runs, errs
		case <-time.After(interval):
		}
	}
	return runs, errs
}
