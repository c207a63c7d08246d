package egress

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"

	"golang.org/x/net/proxy"
)

// connectSOCKS asks the SOCKS5 proxy p, on c, to connect to addr, within
// ctx. With scheme socks5 the host name is resolved here (with resolver,
// nil for the default) and the proxy is given an IP address; with socks5h
// the proxy resolves it. It does not close c.
func connectSOCKS(ctx context.Context, c net.Conn, p *url.URL, network, addr string, resolver *net.Resolver) (net.Conn, error) {
	target := addr
	if p.Scheme == "socks5" {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		if net.ParseIP(host) == nil {
			if resolver == nil {
				resolver = net.DefaultResolver
			}
			ips, err := resolver.LookupIPAddr(ctx, host)
			if err != nil {
				return nil, fmt.Errorf("resolve %s for the SOCKS5 proxy (write socks5h:// to have the proxy resolve it): %w", host, err)
			}
			target = net.JoinHostPort(ips[0].IP.String(), port)
		}
	}
	var auth *proxy.Auth
	if p.User != nil {
		pass, _ := p.User.Password()
		auth = &proxy.Auth{User: p.User.Username(), Password: pass}
	}
	d, err := proxy.SOCKS5("tcp", p.Host, auth, nil)
	if err != nil {
		return nil, fmt.Errorf("SOCKS5 proxy %s: %w", p.Redacted(), err)
	}
	withConn, ok := d.(interface {
		DialWithConn(ctx context.Context, c net.Conn, network, address string) (net.Addr, error)
	})
	if !ok {
		return nil, errors.New("egress: golang.org/x/net/proxy's SOCKS5 dialer lacks DialWithConn")
	}
	if _, err := withConn.DialWithConn(ctx, c, network, target); err != nil {
		return nil, socksError(ctx, p, addr, err)
	}
	return c, nil
}

// socksError words the SOCKS5 client's error: a reply code or an
// authentication failure becomes a *RefusedError.
func socksError(ctx context.Context, p *url.URL, addr string, err error) error {
	msg := err.Error()
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		msg = op.Err.Error()
	}
	ref := &RefusedError{Proxy: p.Host, Target: addr, SOCKS: true, Credentials: p.User != nil}
	switch {
	case ctx.Err() != nil || errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Errorf("the SOCKS5 proxy at %s, asked to connect to %s: %w", p.Host, addr, timeoutError(ctx))
	case strings.HasPrefix(msg, "unknown error "):
		// golang.org/x/net/internal/socks puts the reply code, in
		// words, after this prefix.
		ref.Reason = strings.TrimPrefix(msg, "unknown error ")
		return ref
	case strings.Contains(msg, "authentication failed"):
		ref.Auth, ref.Reason = true, "username/password authentication failed"
		return ref
	case strings.Contains(msg, "no acceptable authentication methods"):
		ref.Auth, ref.Reason = true, "no acceptable authentication method"
		return ref
	}
	return fmt.Errorf("the SOCKS5 proxy at %s, asked to connect to %s: %s", p.Host, addr, eofAsClosed(unwrapOp(err)))
}

func unwrapOp(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err
	}
	return err
}
