package redisproc

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// CertValidity is how long the certificates of NewCerts are valid, from a
// minute before NewCerts ran.
const CertValidity = 2 * time.Hour

// Certs are a test certificate authority and certificates it signed, for a
// server on 127.0.0.1 and for a client, made by NewCerts with crypto/x509
// (ECDSA P-256), plus a second, unrelated authority for the cases that
// must fail. The files are PEM; the keys are PKCS #8.
type Certs struct {
	// CAFile is the authority's certificate: the server's
	// tls-ca-cert-file, which it checks client certificates against.
	CAFile string
	// ServerCertFile and ServerKeyFile are the server's certificate, for
	// 127.0.0.1, ::1 and localhost, and its key.
	ServerCertFile, ServerKeyFile string
	// ClientCertFile and ClientKeyFile are a client certificate signed by
	// the authority, and its key.
	ClientCertFile, ClientKeyFile string

	pool            *x509.CertPool
	wrongPool       *x509.CertPool
	client          tls.Certificate
	untrustedClient tls.Certificate
}

// NewCerts makes an authority, a server and a client certificate, and
// writes their files into dir, which must exist.
func NewCerts(dir string) (*Certs, error) {
	now := time.Now().Add(-time.Minute)
	ca, err := newCA("redistest CA", now)
	if err != nil {
		return nil, err
	}
	wrongCA, err := newCA("redistest wrong CA", now)
	if err != nil {
		return nil, err
	}
	srv, err := ca.sign(now, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "redistest server"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		DNSNames:    []string{"localhost"},
	})
	if err != nil {
		return nil, err
	}
	clientTemplate := func() *x509.Certificate {
		return &x509.Certificate{
			Subject:     pkix.Name{CommonName: "redistest client"},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}
	}
	client, err := ca.sign(now, clientTemplate())
	if err != nil {
		return nil, err
	}
	untrusted, err := wrongCA.sign(now, clientTemplate())
	if err != nil {
		return nil, err
	}
	c := &Certs{
		CAFile:         filepath.Join(dir, "ca.crt"),
		ServerCertFile: filepath.Join(dir, "server.crt"),
		ServerKeyFile:  filepath.Join(dir, "server.key"),
		ClientCertFile: filepath.Join(dir, "client.crt"),
		ClientKeyFile:  filepath.Join(dir, "client.key"),
		pool:           x509.NewCertPool(),
		wrongPool:      x509.NewCertPool(),
	}
	c.pool.AddCert(ca.cert)
	c.wrongPool.AddCert(wrongCA.cert)
	if c.client, err = client.tlsCertificate(); err != nil {
		return nil, err
	}
	if c.untrustedClient, err = untrusted.tlsCertificate(); err != nil {
		return nil, err
	}
	for _, f := range []struct {
		path string
		kp   *keyPair
		key  bool
	}{
		{c.CAFile, ca, false},
		{c.ServerCertFile, srv, false},
		{c.ServerKeyFile, srv, true},
		{c.ClientCertFile, client, false},
		{c.ClientKeyFile, client, true},
	} {
		b := f.kp.certPEM
		if f.key {
			b = f.kp.keyPEM
		}
		if err := os.WriteFile(f.path, b, 0o600); err != nil {
			return nil, fmt.Errorf("redisproc: %w", err)
		}
	}
	return c, nil
}

// ClientTLS returns a new client configuration that trusts the authority
// and presents the client certificate: what a client of a server that
// requires client certificates needs.
func (c *Certs) ClientTLS() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: c.pool, Certificates: []tls.Certificate{c.client}}
}

// ClientTLSNoCert returns a new client configuration that trusts the
// authority and presents no certificate: a server that requires client
// certificates refuses it.
func (c *Certs) ClientTLSNoCert() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: c.pool}
}

// WrongCATLS returns a new client configuration that trusts only another
// authority, so the client refuses the server's certificate (x509
// "certificate signed by unknown authority"). It presents a client
// certificate of that other authority.
func (c *Certs) WrongCATLS() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: c.wrongPool, Certificates: []tls.Certificate{c.untrustedClient}}
}

// UntrustedClientTLS returns a new client configuration that trusts the
// authority but presents a client certificate signed by another one: a
// server that requires client certificates refuses it.
func (c *Certs) UntrustedClientTLS() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: c.pool, Certificates: []tls.Certificate{c.untrustedClient}}
}

// keyPair is a certificate, its key, and their PEM forms.
type keyPair struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	certPEM []byte
	keyPEM  []byte
}

func newCA(name string, notBefore time.Time) (*keyPair, error) {
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: name},
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	return issue(notBefore, tmpl, nil)
}

// sign issues a certificate from tmpl, signed by ca, with a new key.
func (ca *keyPair) sign(notBefore time.Time, tmpl *x509.Certificate) (*keyPair, error) {
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	return issue(notBefore, tmpl, ca)
}

// issue makes a key and a certificate from tmpl, signed by parent, or
// self-signed when parent is nil.
func issue(notBefore time.Time, tmpl *x509.Certificate, parent *keyPair) (*keyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("redisproc: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, fmt.Errorf("redisproc: %w", err)
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = notBefore
	tmpl.NotAfter = notBefore.Add(CertValidity)
	parentCert, signer := tmpl, key
	if parent != nil {
		parentCert, signer = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parentCert, &key.PublicKey, signer)
	if err != nil {
		return nil, fmt.Errorf("redisproc: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("redisproc: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("redisproc: %w", err)
	}
	return &keyPair{
		cert:    cert,
		key:     key,
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}, nil
}

func (kp *keyPair) tlsCertificate() (tls.Certificate, error) {
	c, err := tls.X509KeyPair(kp.certPEM, kp.keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("redisproc: %w", err)
	}
	return c, nil
}
