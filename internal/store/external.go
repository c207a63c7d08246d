package store

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net"

	"github.com/nats-io/nats.go"
)

// EdgePermissions is what an edge's NATS user must be allowed on an
// external server: JetStream's API (bucket and stream lookups and
// creation, consumers of the watches and listings, direct gets), the
// flow-control replies of the listings' push consumers ($JS.FC), the
// key-value subjects of its buckets (one each: a NATS wildcard is a whole
// token, so "$KV.sallyport_*.>" would match nothing), the audit subject,
// and its own inboxes for the API's answers and the consumers'
// deliveries. JetStream's API is per account: give the edges an account
// of their own and "$JS.API.>" reaches only their streams. README
// "External NATS" shows the set as an operator writes it; the tests run
// edges with no more.
var EdgePermissions = struct{ Publish, Subscribe []string }{
	Publish: []string{"$JS.API.>", "$JS.FC.>",
		"$KV." + BucketTokens + ".>", "$KV." + BucketConnectors + ".>", "$KV." + BucketSessions + ".>", "$KV." + BucketEdges + ".>",
		subjectAudit},
	Subscribe: []string{"_INBOX.>"},
}

// connectError explains why the connection to an external NATS at opts.URL
// failed, naming the setting to fix.
func connectError(opts Options, err error) error {
	return fmt.Errorf("open store: connect to NATS at %s: %w; %s", opts.URL, err, connectHint(opts, err))
}

// connectHint says what to check for err, the error of a connection to an
// external NATS with opts.
func connectHint(opts Options, err error) string {
	var unknownCA x509.UnknownAuthorityError
	var host x509.HostnameError
	var op *net.OpError
	switch {
	case errors.As(err, &unknownCA) && opts.CAFile == "":
		return "the NATS server's certificate is signed by a CA this host does not trust: set store.ca to the file of the CA that signed the servers' certificates"
	case errors.As(err, &unknownCA):
		return fmt.Sprintf("the NATS server's certificate is not signed by the CA in store.ca (%s): set store.ca to the CA that signed the servers' certificates", opts.CAFile)
	case errors.As(err, &host):
		return "the NATS server's certificate is not for the host in store.url: use a name (or address) the certificate holds"
	case (errors.As(err, &op) && op.Op == "remote error" || errors.Is(err, nats.ErrTLS)) && opts.CertFile != "":
		// The server's refusal of the certificate arrives as its TLS
		// alert or, when the handshake ended first on this side, as the
		// connection it closes: either way, with a certificate given,
		// that certificate is what it refused.
		return fmt.Sprintf("the NATS server refused the client certificate in store.cert (%s): give one signed by a CA the server trusts (its tls.ca_file)", opts.CertFile)
	case (errors.As(err, &op) && op.Op == "remote error") || errors.Is(err, nats.ErrTLS):
		return "the NATS server ended the TLS handshake: if it requires client certificates (tls { verify: true }), set store.cert and store.key"
	case errors.Is(err, nats.ErrAuthorization) && opts.CredsFile == "":
		return "the NATS server requires a user: set store.credentials to the edge user's .creds file (or store.cert and store.key if it maps certificates to users)"
	case errors.Is(err, nats.ErrAuthorization):
		return fmt.Sprintf("the NATS server refused the user in store.credentials (%s): check that it is the edge user's file, of an account this server (its operator and resolver) knows, and not expired or revoked", opts.CredsFile)
	}
	return "check the URL and that the server runs with JetStream"
}

// permissionError explains a failure to open the buckets on an external
// NATS after the server refused the edge's user a subject (denied, the
// last refusal seen), or returns err as it is.
func permissionError(err, denied error) error {
	if denied == nil {
		return err
	}
	return fmt.Errorf("%w: the NATS server refused the edge's user a subject (%v): it needs publish on %v and subscribe on %v (README, External NATS)",
		err, denied, EdgePermissions.Publish, EdgePermissions.Subscribe)
}
