package ingress

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/sallyport/sallyport/internal/admission"
	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/pipe"
	"github.com/sallyport/sallyport/internal/route"
	"github.com/sallyport/sallyport/internal/slowdown"
)

// SOCKS5 (RFC 1928) and its username/password authentication (RFC 1929).
const (
	socksVersion     = 5
	socksAuthVersion = 1

	socksNoAuth       = 0x00
	socksUserPass     = 0x02
	socksNoAcceptable = 0xff

	socksConnect = 1

	socksIPv4   = 1
	socksDomain = 3
	socksIPv6   = 4
)

// socksReply is a SOCKS5 reply code.
type socksReply byte

// The reply codes of RFC 1928, section 6.
const (
	socksSucceeded           socksReply = 0
	socksGeneralFailure      socksReply = 1
	socksNotAllowed          socksReply = 2
	socksNetworkUnreachable  socksReply = 3
	socksHostUnreachable     socksReply = 4
	socksConnectionRefused   socksReply = 5
	socksCommandNotSupported socksReply = 7
	socksAddrNotSupported    socksReply = 8
)

// socksListener is a socks5 listener. A client names a service as the
// destination's domain name; the port is ignored, because the connector's
// configuration fixes the back-end's address. IP-address destinations are
// refused (the edge never knows back-end addresses).
type socksListener struct {
	s       *Set
	backoff slowdown.Failures
	l       net.Listener
	tr      *pipe.Tracker // its client connections
	// users is the password hashes by user, replaced whole by a reload;
	// nil: no authentication.
	users atomic.Pointer[socksUsers]
}

// socksUsers is a socks5 listener's accounts: password hashes by user.
type socksUsers = map[string][sha256.Size]byte

// loadSOCKSUsers reads each user's password file: its first line.
func loadSOCKSUsers(users []config.SOCKSUser) (map[string][sha256.Size]byte, error) {
	if len(users) == 0 {
		return nil, nil
	}
	out := make(map[string][sha256.Size]byte, len(users))
	for _, u := range users {
		b, err := os.ReadFile(u.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("user %s: read password file: %w", u.Name, err)
		}
		pw, _, _ := strings.Cut(string(b), "\n")
		pw = strings.TrimSuffix(pw, "\r")
		if pw == "" || len(pw) > 255 {
			return nil, fmt.Errorf("user %s: password file %s: the first line must hold a password of 1 to 255 bytes", u.Name, u.PasswordFile)
		}
		out[u.Name] = sha256.Sum256([]byte(pw))
	}
	return out, nil
}

func (f *socksListener) serve(ctx context.Context) { f.s.accept(ctx, "socks5", f.l, f.tr, f.handle) }
func (f *socksListener) drain()                    {}
func (f *socksListener) close()                    {}

// handle serves one SOCKS client. It owns c and closes it.
func (f *socksListener) handle(c net.Conn) (joined bool) {
	start := f.s.now()
	cl := client(c, "socks5")
	c.SetDeadline(start.Add(handshakeTimeout))
	dest, rep, err := f.handshake(c, sourceIP(c))
	if err != nil {
		if rep != socksSucceeded {
			writeSOCKSReply(c, rep)
		}
		var ref *admission.Refusal
		if errors.As(err, &ref) {
			f.s.d.Refused(ref, cl)
		} else {
			f.s.log.Debug("SOCKS client went away during the handshake", "client", cl.Addr.String(), "err", err)
		}
		c.Close()
		return false
	}
	var st Stream
	var ref *admission.Refusal
	if dest.address != "" {
		st, ref = f.s.d.OpenAddress(dest.address, cl)
	} else {
		st, ref = f.s.reach(dest.service, cl)
	}
	if ref != nil {
		rep := answerFor(ref).socks
		if dest.ip && ref.Reason == admission.ReasonAddressNotAllowed {
			rep = socksNotAllowed // an address no allow-list holds
		}
		writeSOCKSReply(c, rep)
		c.Close()
		return false
	}
	// Success may be told only once the connector has dialed the
	// back-end: a client must learn of a refusal from the reply code.
	if err := st.Accepted(); err != nil {
		writeSOCKSReply(c, answerFor(err).socks)
		if !errors.As(err, new(*admission.Refusal)) { // the edge's own refusals are logged where they are made
			f.s.log.Warn("client refused by connector", "via", cl.Via, "service", st.Service(), "client", cl.Addr.String(), "connector", st.Connector(), "err", err)
		}
		st.Close()
		c.Close()
		return false
	}
	if err := writeSOCKSReply(c, socksSucceeded); err != nil {
		st.Close()
		c.Close()
		return false
	}
	c.SetDeadline(time.Time{})
	f.s.join(c, st, cl, start, nil)
	return true
}

// handshake reads the greeting, authenticates and reads the request. It
// returns the service asked for, or an error and the reply to send (zero
// when none fits: the client gets no reply). Refusals are *refusedError.
func (f *socksListener) handshake(c io.ReadWriter, src netip.Addr) (socksDest, socksReply, error) {
	// Read exactly what the protocol says, without buffering ahead: the
	// bytes after the request belong to the back-end.
	var hdr [2]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return socksDest{}, 0, err
	}
	if hdr[0] != socksVersion {
		return socksDest{}, 0, admission.Refuse(admission.ReasonSOCKS, "", "not a SOCKS5 greeting (first byte %#x)", hdr[0])
	}
	methods := make([]byte, hdr[1])
	if _, err := io.ReadFull(c, methods); err != nil {
		return socksDest{}, 0, err
	}
	var users socksUsers
	if u := f.users.Load(); u != nil {
		users = *u
	}
	want := byte(socksNoAuth)
	if users != nil {
		want = socksUserPass
	}
	if bytes.IndexByte(methods, want) < 0 {
		c.Write([]byte{socksVersion, socksNoAcceptable})
		if want == socksUserPass {
			return socksDest{}, 0, admission.Refuse(admission.ReasonSOCKSAuth, "", "SOCKS client offers no username/password authentication, which this listener requires")
		}
		return socksDest{}, 0, admission.Refuse(admission.ReasonSOCKS, "", "SOCKS client offers no method this listener accepts (no authentication)")
	}
	if _, err := c.Write([]byte{socksVersion, want}); err != nil {
		return socksDest{}, 0, err
	}
	if want == socksUserPass {
		if err := f.authenticate(c, src, users); err != nil {
			return socksDest{}, 0, err
		}
	}
	var req [4]byte
	if _, err := io.ReadFull(c, req[:]); err != nil {
		return socksDest{}, 0, err
	}
	if req[0] != socksVersion {
		return socksDest{}, socksGeneralFailure, admission.Refuse(admission.ReasonSOCKS, "", "bad SOCKS request version %#x", req[0])
	}
	var dst string
	var port int
	switch req[3] {
	case socksIPv4, socksIPv6:
		n := net.IPv4len
		if req[3] == socksIPv6 {
			n = net.IPv6len
		}
		b := make([]byte, n+2)
		if _, err := io.ReadFull(c, b); err != nil {
			return socksDest{}, 0, err
		}
		dst = net.IP(b[:n]).String()
		port = int(b[n])<<8 | int(b[n+1])
	case socksDomain:
		var l [1]byte
		if _, err := io.ReadFull(c, l[:]); err != nil {
			return socksDest{}, 0, err
		}
		b := make([]byte, int(l[0])+2)
		if _, err := io.ReadFull(c, b); err != nil {
			return socksDest{}, 0, err
		}
		dst = string(b[:l[0]])
		port = int(b[l[0]])<<8 | int(b[l[0]+1])
	default:
		return socksDest{}, socksAddrNotSupported, admission.Refuse(admission.ReasonSOCKS, "", "SOCKS address type %d is not supported", req[3])
	}
	if req[1] != socksConnect {
		return socksDest{}, socksCommandNotSupported, admission.Refuse(admission.ReasonSOCKS, "", "SOCKS command %d is not supported (CONNECT only)", req[1])
	}
	if req[3] == socksDomain {
		service := route.NormalizeHost(dst)
		if f.s.current().known[service] {
			return socksDest{service: service}, 0, nil
		}
	}
	// Not a service name: an address, which only a connector whose
	// allow-list holds it will serve.
	return socksDest{address: net.JoinHostPort(dst, strconv.Itoa(port)), ip: req[3] != socksDomain}, 0, nil
}

// socksDest is what a SOCKS client asked for: a service by name, or an
// address (ip says whether the client gave it as an IP address).
type socksDest struct {
	service, address string
	ip               bool
}

// authenticate runs RFC 1929's subnegotiation. A failure is answered
// after the source address's login backoff.
func (f *socksListener) authenticate(c io.ReadWriter, src netip.Addr, users socksUsers) error {
	var b [256]byte
	if _, err := io.ReadFull(c, b[:2]); err != nil {
		return err
	}
	if b[0] != socksAuthVersion {
		return admission.Refuse(admission.ReasonSOCKSAuth, "", "bad SOCKS authentication version %#x", b[0])
	}
	user := make([]byte, b[1])
	if _, err := io.ReadFull(c, user); err != nil {
		return err
	}
	if _, err := io.ReadFull(c, b[:1]); err != nil {
		return err
	}
	pw := b[1 : 1+int(b[0])]
	if _, err := io.ReadFull(c, pw); err != nil {
		return err
	}
	got := sha256.Sum256(pw)
	want, known := users[string(user)]
	if subtle.ConstantTimeCompare(got[:], want[:]) != 1 || !known {
		if d := f.backoff.Failed(src, time.Now()); d > 0 {
			time.Sleep(d) // within the handshake's deadline; the client waits
		}
		c.Write([]byte{socksAuthVersion, 1})
		return admission.Refuse(admission.ReasonSOCKSAuth, "", "SOCKS authentication failed for user %q", string(user))
	}
	f.backoff.Succeeded(src)
	_, err := c.Write([]byte{socksAuthVersion, 0})
	return err
}

// writeSOCKSReply writes a reply whose bound address is 0.0.0.0:0.
func writeSOCKSReply(c io.Writer, rep socksReply) error {
	_, err := c.Write([]byte{socksVersion, byte(rep), 0, socksIPv4, 0, 0, 0, 0, 0, 0})
	return err
}
