package gateway

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/rs/zerolog"
)

// TLSConfig is the tls section (issue 9): HTTPS for agents, optionally
// mutual TLS. The files are watched and reloaded without a restart, like any
// other credential: a new certificate (cert-manager, a Kubernetes secret
// volume's symlink swap, an editor's atomic rename) is served to the next
// connection, and a bad new pair is refused with an error naming the file
// while the pair before it is kept.
type TLSConfig struct {
	// CertFile is the server certificate chain (PEM), leaf first. If empty,
	// the gateway serves plain HTTP.
	CertFile string `koanf:"cert_file"`
	// KeyFile is CertFile's private key (PEM). Required with CertFile.
	KeyFile string `koanf:"key_file"`
	// ClientCAFile, if set, turns on mutual TLS: every client must present a
	// certificate signed by one of these CAs (PEM), or the handshake fails.
	// If empty, clients are not asked for a certificate.
	ClientCAFile string `koanf:"client_ca_file"`
}

// Enabled reports whether the gateway serves HTTPS.
func (t TLSConfig) Enabled() bool { return t.CertFile != "" }

// validateTLS checks the tls section's shape; the files themselves are read
// when the gateway is built (New), where a bad one fails the start naming it.
func (c *Config) validateTLS() []error {
	t := c.TLS
	var errs []error
	switch {
	case t.CertFile != "" && t.KeyFile == "":
		errs = append(errs, errors.New("tls.key_file: missing: tls.cert_file needs its private key"))
	case t.CertFile == "" && t.KeyFile != "":
		errs = append(errs, errors.New("tls.cert_file: missing: tls.key_file is set without its certificate"))
	}
	if t.ClientCAFile != "" && t.CertFile == "" {
		errs = append(errs, errors.New("tls.client_ca_file: set without tls.cert_file: mutual TLS needs the server's own certificate"))
	}
	return errs
}

// tlsSettle is how long the files must stay quiet after a change before
// they are read: a rotation writes the certificate and the key one after the
// other, and reading between the two would log a spurious mismatch.
const tlsSettle = 100 * time.Millisecond

// CertReloader holds the gateway's TLS certificate (and client CAs) as last
// loaded from the files of a TLSConfig, and reloads them when they change.
type CertReloader struct {
	cfg TLSConfig
	log zerolog.Logger

	cert atomic.Pointer[tls.Certificate]
	cas  atomic.Pointer[x509.CertPool] // nil without mutual TLS

	mu      sync.Mutex
	digest  [32]byte // of the files last tried, loaded or refused
	reloads atomic.Int64
}

// NewCertReloader loads the files of cfg; an unreadable or bad file is an
// error naming its key and path.
func NewCertReloader(cfg TLSConfig, log zerolog.Logger) (*CertReloader, error) {
	r := &CertReloader{cfg: cfg, log: log.With().Str("component", "tls").Logger()}
	files, sum, err := r.read()
	if err != nil {
		return nil, err
	}
	if err := r.load(files, sum); err != nil {
		return nil, err
	}
	return r, nil
}

// tlsFiles are the contents of the configured files.
type tlsFiles struct{ cert, key, ca []byte }

// read reads the files and hashes them together.
func (r *CertReloader) read() (tlsFiles, [32]byte, error) {
	var f tlsFiles
	var err error
	readOne := func(key, path string) []byte {
		if path == "" || err != nil {
			return nil
		}
		var b []byte
		b, err = os.ReadFile(path)
		if err != nil {
			err = fmt.Errorf("tls.%s: %w", key, err)
		}
		return b
	}
	f.cert = readOne("cert_file", r.cfg.CertFile)
	f.key = readOne("key_file", r.cfg.KeyFile)
	f.ca = readOne("client_ca_file", r.cfg.ClientCAFile)
	if err != nil {
		return f, [32]byte{}, err
	}
	h := sha256.New()
	for _, b := range [][]byte{f.cert, f.key, f.ca} {
		fmt.Fprintf(h, "%d:", len(b))
		h.Write(b)
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return f, sum, nil
}

// load parses files and, when they are good, serves them from now on.
func (r *CertReloader) load(f tlsFiles, sum [32]byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.digest = sum
	cert, err := tls.X509KeyPair(f.cert, f.key)
	if err != nil {
		// Name the file at fault: the certificate when it does not parse,
		// else the key (which does not parse, or is not the certificate's).
		if block, _ := pem.Decode(f.cert); block == nil || block.Type != "CERTIFICATE" {
			return fmt.Errorf("tls.cert_file %s: no PEM certificate: %v", r.cfg.CertFile, err)
		} else if _, perr := x509.ParseCertificate(block.Bytes); perr != nil {
			return fmt.Errorf("tls.cert_file %s: %v", r.cfg.CertFile, perr)
		}
		return fmt.Errorf("tls.key_file %s (for tls.cert_file %s): %v", r.cfg.KeyFile, r.cfg.CertFile, err)
	}
	var cas *x509.CertPool
	if r.cfg.ClientCAFile != "" {
		cas = x509.NewCertPool()
		if !cas.AppendCertsFromPEM(f.ca) {
			return fmt.Errorf("tls.client_ca_file %s: no PEM certificate in it", r.cfg.ClientCAFile)
		}
	}
	r.cert.Store(&cert)
	r.cas.Store(cas)
	ev := r.log.Info()
	if r.reloads.Add(1) == 1 {
		ev = r.log.Debug()
	}
	if leaf := cert.Leaf; leaf != nil {
		ev = ev.Str("subject", leaf.Subject.String()).Time("not_after", leaf.NotAfter)
		if time.Now().After(leaf.NotAfter) {
			r.log.Warn().Str("cert_file", r.cfg.CertFile).Time("not_after", leaf.NotAfter).Msg("tls: the certificate has expired; clients will refuse it")
		}
	}
	ev.Str("cert_file", r.cfg.CertFile).Msg("tls: certificate loaded")
	return nil
}

// Reload re-reads the files and serves them if they changed and are good; a
// bad new pair is refused (the error names the file) and the pair before it
// kept.
func (r *CertReloader) Reload() error {
	f, sum, err := r.read()
	if err != nil {
		return err
	}
	r.mu.Lock()
	same := sum == r.digest
	r.mu.Unlock()
	if same {
		return nil
	}
	return r.load(f, sum)
}

// Watch reloads the files whenever their directories change, until ctx
// ends. It watches the directories, not the files: an atomic rename or a
// Kubernetes secret volume's symlink swap replaces a file, and a watch on
// the old inode would go quiet. Errors are logged, naming the file; the
// certificate served stays the last good one.
func (r *CertReloader) Watch(ctx context.Context) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("tls: watch: %w", err)
	}
	defer w.Close()
	dirs := map[string]bool{}
	for _, p := range []string{r.cfg.CertFile, r.cfg.KeyFile, r.cfg.ClientCAFile} {
		if d := filepath.Dir(p); p != "" && !dirs[d] {
			dirs[d] = true
			if err := w.Add(d); err != nil {
				return fmt.Errorf("tls: watch directory %s: %w", d, err)
			}
		}
	}
	settle := time.NewTimer(0) // a change before the watch was in place is caught at once
	defer settle.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-w.Events:
			if !ok {
				return nil
			}
			settle.Reset(tlsSettle)
		case _, ok := <-w.Errors:
			if !ok {
				return nil
			}
			settle.Reset(tlsSettle)
		case <-settle.C:
			if err := r.Reload(); err != nil {
				r.log.Error().Str(fieldErr, err.Error()).Msg("tls: new certificate files refused; still serving the previous certificate")
			}
		}
	}
}

// Certificate returns the certificate served now.
func (r *CertReloader) Certificate() *tls.Certificate { return r.cert.Load() }

// TLSConfig is the server's tls.Config: each handshake gets the certificate
// and client CAs loaded last, so a reload takes effect on the next
// connection without a restart (connections open keep theirs).
//
// It offers HTTP/1.1 only. The gateway's bounds are per connection
// (max_connections, the read timeouts), which HTTP/2 would multiplex
// hundreds of streams over; and it offered h2 while serving HTTP/1.1 on
// the connection, so a client taking h2 (curl, browsers, Go's default
// transport) got no answer at all (found trying the gateway from outside).
func (r *CertReloader) TLSConfig() *tls.Config {
	base := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}}
	base.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		c := &tls.Config{
			MinVersion:   tls.VersionTLS12,
			NextProtos:   base.NextProtos,
			Certificates: []tls.Certificate{*r.cert.Load()},
		}
		if cas := r.cas.Load(); cas != nil {
			c.ClientCAs = cas
			c.ClientAuth = tls.RequireAndVerifyClientCert
		}
		return c, nil
	}
	return base
}

// Listener wraps l so it serves TLS with TLSConfig.
func (r *CertReloader) Listener(l net.Listener) net.Listener {
	return tls.NewListener(l, r.TLSConfig())
}

// initTLS loads the tls section's files (New fails naming a bad one).
func (g *Server) initTLS() error {
	if !g.config().TLS.Enabled() {
		return nil
	}
	r, err := NewCertReloader(g.config().TLS, g.log)
	if err != nil {
		return err
	}
	g.tls = r
	return nil
}

// watchTLS reloads the certificate files when they change, until ctx ends.
func (g *Server) watchTLS(ctx context.Context) {
	if g.tls == nil {
		return
	}
	defer g.recoverLog("tls watch", "")
	if err := g.tls.Watch(ctx); err != nil {
		g.log.Error().Str(fieldErr, err.Error()).Msg("tls: certificate files are not watched; restart to pick up a new certificate")
	}
}

// tlsListener serves TLS on l when the tls section is set.
func (g *Server) tlsListener(l net.Listener) net.Listener {
	if g.tls == nil {
		return l
	}
	return g.tls.Listener(l)
}

// Scheme is "https" when the gateway serves TLS, else "http".
func (c *Config) Scheme() string {
	if c.TLS.Enabled() {
		return "https"
	}
	return "http"
}
