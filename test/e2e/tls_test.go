//go:build e2e

package e2e

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
	"strings"
	"testing"
	"time"
)

// pki makes a CA and certificates it signs, written as PEM files.
type pki struct {
	t    *testing.T
	dir  string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newCA(t *testing.T, dir, name string) *pki {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	p := &pki{t: t, dir: dir, cert: cert, key: key}
	p.write(name+".pem", "CERTIFICATE", der)
	return p
}

func (p *pki) write(name, typ string, der []byte) string {
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		p.t.Fatal(err)
	}
	return path
}

// issue signs a certificate for name; server ones get 127.0.0.1.
func (p *pki) issue(name string, server bool) (certFile, keyFile string) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.cert, &key.PublicKey, p.key)
	if err != nil {
		p.t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	return p.write(name+".pem", "CERTIFICATE", der), p.write(name+".key", "EC PRIVATE KEY", kder)
}

// TestTLSAPI: the TCP API refuses a client without a certificate and one
// with a certificate from another CA, and serves one from its CA.
func TestTLSAPI(t *testing.T) {
	w := newWorld(t, "")
	dir := t.TempDir()
	ca, other := newCA(t, dir, "ca"), newCA(t, dir, "other-ca")
	srvCert, srvKey := ca.issue("server", true)
	goodCert, goodKey := ca.issue("client", false)
	badCert, badKey := other.issue("stranger", false)
	caFile := filepath.Join(dir, "ca.pem")
	w.daemonArgs = []string{"--api-addr", "127.0.0.1:9478", "--tls-cert", srvCert, "--tls-key", srvKey, "--tls-client-ca", caFile}
	w.startDaemon()

	curl := func(extra ...string) (string, error) {
		args := append([]string{"curl", "-sS", "--max-time", "5", "--cacert", caFile}, extra...)
		return w.exec("host", append(args, "https://127.0.0.1:9478/v1/ping")...)
	}
	if out, err := curl(); err == nil {
		t.Errorf("a client without a certificate was served: %s", out)
	}
	if out, err := curl("--cert", badCert, "--key", badKey); err == nil {
		t.Errorf("a client with another CA's certificate was served: %s", out)
	}
	out, err := curl("--cert", goodCert, "--key", goodKey)
	if err != nil || !strings.Contains(out, `"pid"`) {
		t.Errorf("the CA's client was refused: %v %s", err, out)
	}
	// Plain HTTP is not spoken at all.
	if out, err := w.exec("host", "curl", "-sS", "--max-time", "5", "http://127.0.0.1:9478/v1/ping"); err == nil && strings.Contains(out, "pid") {
		t.Errorf("plain HTTP was served: %s", out)
	}
}
