package gateway

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// testCA issues certificates for the TLS tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns a PEM certificate and key for cn: a server certificate for
// 127.0.0.1, or a client one.
func (ca *testCA) issue(t *testing.T, cn string, client bool) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
	}
	if client {
		tmpl.ExtKeyUsage, tmpl.IPAddresses = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, nil
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

// writeAtomic replaces path's content by a rename, as cert-manager and
// editors do.
func writeAtomic(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// tlsGateway serves a gateway over TLS with the given tls section files
// (in dir) and returns its address.
func tlsGateway(t *testing.T, ctx context.Context, section string, logs *syncBuffer) string {
	t.Helper()
	up := newTestUpstream(t, "a", "echo")
	cfg, err := ParseConfig([]byte(fmt.Sprintf("upstreams:\n  a: {url: %s}\n%s", up.url(), section)), nil)
	if err != nil {
		t.Fatal(err)
	}
	log := zerolog.New(logs)
	g, err := New(cfg, &Options{Logger: &log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.Close() })
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g.Start(ctx)
	served := make(chan error, 1)
	go func() { served <- g.Serve(ctx, l) }()
	t.Cleanup(func() {
		_ = g.Close()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return l.Addr().String()
}

// servedCert returns the common name of the certificate the gateway at addr
// presents, handshaking with client (nil: no client certificate).
func servedCert(ctx context.Context, addr string, roots *x509.CertPool, client *tls.Certificate) (string, error) {
	cfg := &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"}
	if client != nil {
		// Sent whatever CAs the server names, so a certificate of another
		// CA reaches the server's check.
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return client, nil }
	}
	// TLS 1.3 sends the server's verdict on the client certificate after
	// the handshake: a read shows it. A refusal is an alert; a server that
	// took the certificate (or asked for none) sends a session ticket,
	// which ends the read here. A fixed short deadline instead could pass,
	// on a loaded machine, before the server's refusal came.
	var tc *tls.Conn
	cfg.ClientSessionCache = ticketSeen(func() {
		if tc != nil {
			_ = tc.SetReadDeadline(time.Now())
		}
	})
	d := tls.Dialer{Config: cfg}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	tc = c.(*tls.Conn)
	_ = tc.SetReadDeadline(time.Now().Add(10 * time.Second)) // a bound, should neither come
	var buf [1]byte
	if _, err := tc.Read(buf[:]); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		return "", err
	}
	return tc.ConnectionState().PeerCertificates[0].Subject.CommonName, nil
}

// ticketSeen is a ClientSessionCache that keeps nothing and calls itself
// when the server sends a session ticket.
type ticketSeen func()

func (ticketSeen) Get(string) (*tls.ClientSessionState, bool) { return nil, false }
func (f ticketSeen) Put(string, *tls.ClientSessionState)      { f() }

// TestTLSRotation: the gateway serves HTTPS from tls.cert_file and picks a
// new certificate up without a restart; a bad new pair is refused with an
// error naming the file, and the previous certificate stays (issue 9).
func TestTLSRotation(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	ca := newTestCA(t, "test CA")
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	c1, k1 := ca.issue(t, "first", false)
	writeAtomic(t, certFile, c1)
	writeAtomic(t, keyFile, k1)
	logs := &syncBuffer{}
	addr := tlsGateway(t, ctx, fmt.Sprintf("tls: {cert_file: %s, key_file: %s}\n", certFile, keyFile), logs)

	if cn, err := servedCert(ctx, addr, roots, nil); err != nil || cn != "first" {
		t.Fatalf("served certificate = %q, %v; want first", cn, err)
	}
	// HTTP works over it.
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	resp, err := hc.Get("https://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("GET /healthz over TLS: %d", resp.StatusCode)
	}
	// So it does for a client offering HTTP/2 first (Go's default
	// transport, curl, browsers): the handshake agreed on h2 while the
	// server spoke HTTP/1.1 on the connection, and such a client got no
	// answer (found trying the gateway from outside).
	h2 := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, ForceAttemptHTTP2: true}}
	resp, err = h2.Get("https://" + addr + "/healthz")
	if err != nil {
		t.Fatalf("GET /healthz over TLS, the client offering h2 first: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("GET /healthz over TLS, the client offering h2 first: %d", resp.StatusCode)
	}
	// Plain HTTP is not served.
	if resp, err := http.Get("http://" + addr + "/healthz"); err == nil && resp.StatusCode == 200 {
		resp.Body.Close()
		t.Error("plain HTTP served 200 on the TLS port")
	}

	// Rotation: the next connection gets the new certificate.
	c2, k2 := ca.issue(t, "second", false)
	writeAtomic(t, keyFile, k2)
	writeAtomic(t, certFile, c2)
	waitFor(t, ctx, func() bool {
		cn, err := servedCert(ctx, addr, roots, nil)
		return err == nil && cn == "second"
	})

	// A bad pair (a certificate without its key) is refused, naming the
	// key file, and the second certificate stays.
	c3, _ := ca.issue(t, "third", false)
	writeAtomic(t, certFile, c3)
	waitFor(t, ctx, func() bool { return strings.Contains(logs.String(), "new certificate files refused") })
	if !strings.Contains(logs.String(), "tls.key_file "+keyFile) {
		t.Errorf("the refusal does not name the key file:\n%s", logs)
	}
	if cn, err := servedCert(ctx, addr, roots, nil); err != nil || cn != "second" {
		t.Errorf("after a bad pair, served certificate = %q, %v; want second", cn, err)
	}
	// Garbage in the certificate file names the certificate file.
	writeAtomic(t, certFile, []byte("not a certificate"))
	waitFor(t, ctx, func() bool { return strings.Contains(logs.String(), "tls.cert_file "+certFile+": no PEM certificate") })
	if strings.Contains(logs.String(), "PRIVATE KEY") {
		t.Errorf("the logs show a private key:\n%s", logs)
	}
}

// TestMutualTLS: with tls.client_ca_file a client without a certificate, or
// with one from another CA, is refused at the handshake; one signed by the
// CA gets through.
func TestMutualTLS(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	serverCA, clientCA, otherCA := newTestCA(t, "server CA"), newTestCA(t, "client CA"), newTestCA(t, "other CA")
	roots := x509.NewCertPool()
	roots.AddCert(serverCA.cert)
	dir := t.TempDir()
	certFile, keyFile, caFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), filepath.Join(dir, "ca.crt")
	c, k := serverCA.issue(t, "gateway", false)
	writeAtomic(t, certFile, c)
	writeAtomic(t, keyFile, k)
	writeAtomic(t, caFile, clientCA.pem)
	logs := &syncBuffer{}
	addr := tlsGateway(t, ctx, fmt.Sprintf("tls: {cert_file: %s, key_file: %s, client_ca_file: %s}\n", certFile, keyFile, caFile), logs)

	pair := func(ca *testCA) *tls.Certificate {
		cp, kp := ca.issue(t, "agent", true)
		p, err := tls.X509KeyPair(cp, kp)
		if err != nil {
			t.Fatal(err)
		}
		return &p
	}
	if _, err := servedCert(ctx, addr, roots, nil); err == nil || !strings.Contains(err.Error(), "certificate required") {
		t.Errorf("client without a certificate: %v; want refused (certificate required)", err)
	}
	if _, err := servedCert(ctx, addr, roots, pair(otherCA)); err == nil || !strings.Contains(err.Error(), "unknown certificate authority") {
		t.Errorf("client certificate of another CA: %v; want refused", err)
	}
	// The server's side of a failed handshake is a JSON line of the
	// gateway's log (it was a plain-text line on stderr per connection).
	waitFor(t, ctx, func() bool {
		return strings.Contains(logs.String(), `"message":"http server"`) && strings.Contains(logs.String(), "TLS handshake error")
	})
	good := pair(clientCA)
	if cn, err := servedCert(ctx, addr, roots, good); err != nil || cn != "gateway" {
		t.Fatalf("client certificate of the CA: %q, %v", cn, err)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{*good}}}}
	resp, err := hc.Get("https://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("GET /healthz with a client certificate: %d", resp.StatusCode)
	}

	// The client CA rotates too: the old CA's clients are refused after.
	writeAtomic(t, caFile, otherCA.pem)
	waitFor(t, ctx, func() bool {
		_, err := servedCert(ctx, addr, roots, good)
		return err != nil
	})
	if _, err := servedCert(ctx, addr, roots, pair(otherCA)); err != nil {
		t.Errorf("client of the new CA: %v", err)
	}
}

func TestTLSConfigErrors(t *testing.T) {
	t.Parallel()
	const ups = "upstreams:\n  a: {command: x}\n"
	for _, tc := range []struct{ yaml, want string }{
		{"tls: {cert_file: /x.crt}", "tls.key_file: missing: tls.cert_file needs its private key"},
		{"tls: {key_file: /x.key}", "tls.cert_file: missing: tls.key_file is set without its certificate"},
		{"tls: {client_ca_file: /ca.crt}", "tls.client_ca_file: set without tls.cert_file"},
		{"tls: {cert_flie: /x.crt}", "tls.cert_flie: unknown key (did you mean cert_file?)"},
	} {
		if msg := parseErr(t, ups+tc.yaml+"\n"); !strings.Contains(msg, tc.want) {
			t.Errorf("%s: error does not contain %q:\n%s", tc.yaml, tc.want, msg)
		}
	}
	// Unreadable or bad files fail New, naming the key and file.
	dir := t.TempDir()
	ca := newTestCA(t, "ca")
	c, k := ca.issue(t, "gw", false)
	_, k2 := ca.issue(t, "gw", false)
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cert, key, otherKey, junk := write("c.pem", c), write("k.pem", k), write("k2.pem", k2), write("junk", []byte("junk"))
	for _, tc := range []struct {
		tls  TLSConfig
		want string
	}{
		{TLSConfig{CertFile: filepath.Join(dir, "none"), KeyFile: key}, "tls.cert_file: open " + filepath.Join(dir, "none")},
		{TLSConfig{CertFile: cert, KeyFile: otherKey}, "tls.key_file " + otherKey + " (for tls.cert_file " + cert + "): tls: private key does not match public key"},
		{TLSConfig{CertFile: junk, KeyFile: key}, "tls.cert_file " + junk + ": no PEM certificate"},
		{TLSConfig{CertFile: cert, KeyFile: key, ClientCAFile: junk}, "tls.client_ca_file " + junk + ": no PEM certificate in it"},
	} {
		_, err := NewCertReloader(tc.tls, zerolog.Nop())
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewCertReloader(%+v) = %v; want %q", tc.tls, err, tc.want)
		}
	}
}
