package storetest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
)

// TLSFiles are PEM files of a test CA, a server certificate of it for
// 127.0.0.1, and a client certificate of it, as an operator's NATS and
// its clients would have them.
type TLSFiles struct {
	CA                    string
	ServerCert, ServerKey string
	ClientCert, ClientKey string
}

// NewTLSFiles makes a new CA and its certificates in a temporary
// directory.
func NewTLSFiles(t testing.TB) TLSFiles {
	t.Helper()
	dir := t.TempDir()
	caKey := newKey(t)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test NATS CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	f := TLSFiles{CA: filepath.Join(dir, "ca.crt")}
	writePEM(t, f.CA, "CERTIFICATE", caDER)
	leaf := func(name string, serial int64, usage x509.ExtKeyUsage) (string, string) {
		key := newKey(t)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		cert, keyFile := filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
		writePEM(t, cert, "CERTIFICATE", der)
		writePEM(t, keyFile, "EC PRIVATE KEY", keyDER)
		return cert, keyFile
	}
	f.ServerCert, f.ServerKey = leaf("nats-server", 2, x509.ExtKeyUsageServerAuth)
	f.ClientCert, f.ClientKey = leaf("sallyport-edge", 3, x509.ExtKeyUsageClientAuth)
	return f
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func writePEM(t testing.TB, path, kind string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// Operator is a NATS operator with one account that has JetStream, for
// a server in operator (JWT) mode; its users are made by User.
type Operator struct {
	claims  *jwt.OperatorClaims
	opKey   nkeys.KeyPair
	accKey  nkeys.KeyPair
	accPub  string
	accJWT  string
	sysPub  string
	sysJWT  string
	credDir string
}

// NewOperator makes an operator, its system account and an account with
// JetStream.
func NewOperator(t testing.TB) *Operator {
	t.Helper()
	opKey, _ := nkeys.CreateOperator()
	opPub, _ := opKey.PublicKey()
	o := &Operator{claims: jwt.NewOperatorClaims(opPub), opKey: opKey, credDir: t.TempDir()}
	o.claims.Name = "test operator"
	var err error
	if _, err = o.claims.Encode(opKey); err != nil {
		t.Fatal(err)
	}
	account := func(name string, js bool) (nkeys.KeyPair, string, string) {
		k, _ := nkeys.CreateAccount()
		pub, _ := k.PublicKey()
		c := jwt.NewAccountClaims(pub)
		c.Name = name
		if js {
			c.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
		}
		s, err := c.Encode(opKey)
		if err != nil {
			t.Fatal(err)
		}
		return k, pub, s
	}
	_, o.sysPub, o.sysJWT = account("SYS", false)
	o.accKey, o.accPub, o.accJWT = account("SALLYPORT", true)
	o.claims.SystemAccount = o.sysPub
	return o
}

// User makes a user of the JetStream account with permissions perms
// (nil: all) and writes its .creds file, whose path it returns.
func (o *Operator) User(t testing.TB, name string, perms *jwt.Permissions) string {
	t.Helper()
	k, _ := nkeys.CreateUser()
	pub, _ := k.PublicKey()
	c := jwt.NewUserClaims(pub)
	c.Name = name
	c.IssuerAccount = ""
	if perms != nil {
		c.Permissions = *perms
	}
	s, err := c.Encode(o.accKey)
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := k.Seed()
	creds, err := jwt.FormatUserConfig(s, seed)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(o.credDir, name+".creds")
	if err := os.WriteFile(path, creds, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// NATSOptions say how StartSecureNATS secures its server.
type NATSOptions struct {
	// TLS, if set, makes the server speak TLS with TLS.ServerCert.
	TLS *TLSFiles
	// Verify makes it require a client certificate of TLS.CA.
	Verify bool
	// Operator, if set, runs the server in operator mode: only users of
	// its account connect.
	Operator *Operator
}

// StartSecureNATS is StartNATS with TLS, client certificates or JWT
// users as o says; it returns the server's URL.
func StartSecureNATS(t testing.TB, o NATSOptions) string {
	t.Helper()
	opts := &server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoSigs: true, NoLog: true}
	if o.TLS != nil {
		tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: o.TLS.ServerCert, KeyFile: o.TLS.ServerKey, CaFile: o.TLS.CA, Verify: o.Verify})
		if err != nil {
			t.Fatal(err)
		}
		opts.TLSConfig, opts.TLS, opts.TLSVerify, opts.TLSTimeout = tc, true, o.Verify, 5
	}
	if op := o.Operator; op != nil {
		res := &server.MemAccResolver{}
		for pub, s := range map[string]string{op.sysPub: op.sysJWT, op.accPub: op.accJWT} {
			if err := res.Store(pub, s); err != nil {
				t.Fatal(err)
			}
		}
		opts.TrustedOperators = []*jwt.OperatorClaims{op.claims}
		opts.AccountResolver = res
		opts.SystemAccount = op.sysPub
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("external NATS did not start")
	}
	return srv.ClientURL()
}
