package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/sallyport/sallyport/internal/health"
	"github.com/sallyport/sallyport/internal/store"
)

// Client calls a running edge's admin API: over the Unix socket in its
// data directory (Socket), or over TCP with the bearer token (Addr, Token).
type Client struct {
	// Socket is the path of the edge's admin socket; when set, Addr and
	// Token are not used, and the client talks only to a socket that
	// CheckSocket accepts, served by a process of the socket's owner.
	Socket string
	// Addr is the API's host:port.
	Addr string
	// Token is the bearer token.
	Token string
	// HTTP is the client to use; nil means a client with a 30s timeout.
	HTTP *http.Client
}

// CreateKeyfile asks the edge for an enrollment keyfile.
func (c *Client) CreateKeyfile(ctx context.Context, req TokenRequest) ([]byte, error) {
	body, _ := json.Marshal(req)
	return c.do(ctx, http.MethodPost, "/v1/tokens", body, http.StatusCreated)
}

// CreateJoinKeyfile asks the edge for a join keyfile.
func (c *Client) CreateJoinKeyfile(ctx context.Context, req JoinTokenRequest) ([]byte, error) {
	body, _ := json.Marshal(req)
	return c.do(ctx, http.MethodPost, "/v1/join-tokens", body, http.StatusCreated)
}

// Audit reads the audit trail from since on (all of it if zero), calling
// fn with each event; with follow it waits for new ones until ctx ends.
func (c *Client) Audit(ctx context.Context, since time.Time, follow bool, fn func(store.AuditEvent) error) error {
	q := url.Values{}
	if !since.IsZero() {
		q.Set("since", since.UTC().Format(time.RFC3339Nano))
	}
	if follow {
		q.Set("follow", "1")
	}
	body, err := c.stream(ctx, "/v1/audit?"+q.Encode())
	if err != nil {
		return err
	}
	defer body.Close()
	dec := json.NewDecoder(body)
	for {
		var ev store.AuditEvent
		if err := dec.Decode(&ev); err != nil {
			if errors.Is(err, io.EOF) || ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("read the audit trail: %w", err)
		}
		if err := fn(ev); err != nil {
			return err
		}
	}
}

// Connectors lists the enrolled connectors.
func (c *Client) Connectors(ctx context.Context) ([]Connector, error) {
	return call[[]Connector](ctx, c, http.MethodGet, "/v1/connectors")
}

// Grant lets connector ref (name or id) offer service, or no longer.
func (c *Client) Grant(ctx context.Context, ref, service string, grant bool) (Connector, error) {
	method := http.MethodPut
	if !grant {
		method = http.MethodDelete
	}
	return call[Connector](ctx, c, method, "/v1/connectors/"+url.PathEscape(ref)+"/grants/"+url.PathEscape(service))
}

// RevokeConnector revokes connector ref (name or id).
func (c *Client) RevokeConnector(ctx context.Context, ref string) (Connector, error) {
	return call[Connector](ctx, c, http.MethodPost, "/v1/connectors/"+url.PathEscape(ref)+"/revoke")
}

// Tokens lists the enrollment tokens.
func (c *Client) Tokens(ctx context.Context) ([]Token, error) {
	return call[[]Token](ctx, c, http.MethodGet, "/v1/tokens")
}

// RevokeToken revokes token id.
func (c *Client) RevokeToken(ctx context.Context, id string) (Token, error) {
	return call[Token](ctx, c, http.MethodPost, "/v1/tokens/"+url.PathEscape(id)+"/revoke")
}

// call makes a request without a body and decodes the JSON reply.
func call[T any](ctx context.Context, c *Client, method, path string) (T, error) {
	var v T
	b, err := c.do(ctx, method, path, nil, http.StatusOK)
	if err != nil {
		return v, err
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return v, fmt.Errorf("read admin API reply: %w", err)
	}
	return v, nil
}

// Status fetches the edge's status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var st Status
	b, err := c.do(ctx, http.MethodGet, "/v1/status", nil, http.StatusOK)
	if err != nil {
		return st, err
	}
	return st, json.Unmarshal(b, &st)
}

func (c *Client) do(ctx context.Context, method, path string, body []byte, want int) ([]byte, error) {
	resp, err := c.request(ctx, method, path, body, 30*time.Second)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, fmt.Errorf("read admin API reply: %w", err)
	}
	if resp.StatusCode != want {
		return nil, replyError(resp, b)
	}
	return b, nil
}

// stream makes a GET request whose reply may last (no timeout but ctx's)
// and returns its body, which the caller closes.
func (c *Client) stream(ctx context.Context, path string) (io.ReadCloser, error) {
	resp, err := c.request(ctx, http.MethodGet, path, nil, 0)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		return nil, replyError(resp, b)
	}
	return resp.Body, nil
}

// replyError is the error for an unexpected reply with body b.
func replyError(resp *http.Response, b []byte) error {
	var ae Error
	if json.Unmarshal(b, &ae) == nil && ae.Message != "" {
		return fmt.Errorf("edge admin API: %s", ae.Message)
	}
	return fmt.Errorf("edge admin API: %s", resp.Status)
}

// request sends a request over the socket or TCP; timeout 0 means none
// but ctx's (c.HTTP's own timeout, if set, still applies over TCP).
func (c *Client) request(ctx context.Context, method, path string, body []byte, timeout time.Duration) (*http.Response, error) {
	hc, host := c.httpClient(timeout)
	where := c.Addr
	if c.Socket != "" {
		where = c.Socket
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+host+path, rd)
	if err != nil {
		return nil, err
	}
	if c.Socket == "" && c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := hc.Do(req)
	if err != nil {
		var se *SocketError
		if errors.As(err, &se) {
			return nil, se
		}
		return nil, fmt.Errorf("reach the edge's admin API at %s (is the edge running? is --admin right?): %w", where, err)
	}
	return resp, nil
}

// httpClient returns the HTTP client that reaches the API, over the
// socket or TCP, and the host to put in URLs.
func (c *Client) httpClient(timeout time.Duration) (*http.Client, string) {
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: timeout}
	}
	if c.Socket == "" {
		return hc, c.Addr
	}
	return &http.Client{Timeout: hc.Timeout, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) { return DialSocket(ctx, c.Socket) },
	}}, "edge"
}

// Probe asks the edge's probe at path (health.LivePath or
// health.ReadyPath): nil when it answers ok, else the reason.
func (c *Client) Probe(ctx context.Context, path string) error {
	hc, host := c.httpClient(0)
	return health.Probe(ctx, hc, "http://"+host+path, 0)
}
