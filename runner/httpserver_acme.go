package runner

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/hashicorp/go-hclog"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/paster-dev/paster/entrypoints"
)

// DefaultACMERenewInterval is how often the acme coroutine checks the
// certificates for renewal unless acme_renew_interval says otherwise.
const DefaultACMERenewInterval = 10 * time.Minute

// ACMECoroutineName is the name of the coroutine that obtains and renews a
// server's ACME certificates (see HTTPServer.ACMECoroutine): /health lists
// it among the server's coroutines and /metrics counts its restarts.
const ACMECoroutineName = "acme"

// ACMEConfig is the ACME part of a server section (TLSConfig.ACME):
// certificates obtained from an ACME CA by github.com/caddyserver/certmagic,
// with the HTTP-01 challenge (answered on redirect_http's server, or on
// port 80 which certmagic binds while it solves when nothing listens there)
// and TLS-ALPN-01 (answered by the server itself).
type ACMEConfig struct {
	// Domains are the names a certificate is obtained for (domains,
	// separated by spaces or commas); required.
	Domains []string
	// Email is acme_email, the account's contact; "" for none.
	Email string
	// CA is acme_ca, the directory URL (default Let's Encrypt's
	// production directory).
	CA string
	// CARoot is acme_ca_root, a PEM file of roots trusted for the
	// connection to the CA (a private CA's, Pebble's); "" for the
	// system's.
	CARoot string
	// Storage is acme_storage, the directory that keeps the account and
	// certificates (default "acme" beside the INI file).
	Storage string
	// RenewInterval is acme_renew_interval: how often certificates are
	// checked for renewal (default DefaultACMERenewInterval).
	RenewInterval time.Duration
	// HTTP01 and TLSALPN01 are the challenges offered to the CA:
	// acme_challenges, a list of http-01 and tls-alpn-01 (default both).
	HTTP01, TLSALPN01 bool

	roots *x509.CertPool
}

// parseACME reads the acme keys of local: nil when acme is not true (and
// then none of the other acme keys may be set).
func parseACME(local entrypoints.Local) (*ACMEConfig, error) {
	on, err := local.Bool("acme", false)
	if err != nil {
		return nil, err
	}
	others := []string{"domains", "acme_email", "acme_ca", "acme_ca_root", "acme_storage", "acme_renew_interval", "acme_challenges"}
	if !on {
		for _, k := range others {
			if _, set := local.Lookup(k); set {
				return nil, local.Errorf(k, "needs acme = true")
			}
		}
		return nil, nil
	}
	c := &ACMEConfig{
		Domains: strings.FieldsFunc(local.Get("domains"), func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' }),
		Email:   strings.TrimSpace(local.Get("acme_email")),
		CA:      strings.TrimSpace(local.Get("acme_ca")),
		CARoot:  confPath(local, "acme_ca_root"),
		Storage: confPath(local, "acme_storage"),
	}
	if len(c.Domains) == 0 {
		return nil, local.Errorf("acme", "acme = true needs domains, the names to obtain a certificate for")
	}
	for _, d := range c.Domains {
		if !certmagic.SubjectQualifiesForCert(d) {
			return nil, local.Errorf("domains", "%q is not a name a certificate can be obtained for", d)
		}
	}
	if c.CA == "" {
		c.CA = certmagic.LetsEncryptProductionCA
	} else if !strings.HasPrefix(c.CA, "https://") {
		return nil, local.Errorf("acme_ca", "%q is not an https:// directory URL", c.CA)
	}
	if c.Storage == "" {
		dir := "."
		if f := local.Where("acme").File; f != "" {
			dir = filepath.Dir(f)
		}
		c.Storage = filepath.Join(dir, "acme")
	}
	if c.RenewInterval, err = Timeout(local, "acme_renew_interval", DefaultACMERenewInterval); err != nil {
		return nil, err
	}
	if c.RenewInterval == 0 {
		return nil, local.Errorf("acme_renew_interval", "0: certificates would never be renewed")
	}
	c.HTTP01, c.TLSALPN01 = true, true
	if _, set := local.Lookup("acme_challenges"); set {
		c.HTTP01, c.TLSALPN01 = false, false
		for _, ch := range local.List("acme_challenges") {
			switch strings.ToLower(ch) {
			case "http-01":
				c.HTTP01 = true
			case "tls-alpn-01":
				c.TLSALPN01 = true
			default:
				return nil, local.Errorf("acme_challenges", "unknown challenge %q (http-01, tls-alpn-01)", ch)
			}
		}
		if !c.HTTP01 && !c.TLSALPN01 {
			return nil, local.Errorf("acme_challenges", "no challenge: list http-01, tls-alpn-01 or both")
		}
	}
	if c.CARoot != "" {
		data, err := os.ReadFile(c.CARoot)
		if err != nil {
			return nil, local.Errorf("acme_ca_root", "%v", err)
		}
		c.roots = x509.NewCertPool()
		if !c.roots.AppendCertsFromPEM(data) {
			return nil, local.Errorf("acme_ca_root", "%s: no PEM certificate in it", c.CARoot)
		}
	}
	return c, nil
}

// acmeManager is a server's certmagic configuration: its own certificate
// cache (stopped with the server), storage and ACME issuer.
type acmeManager struct {
	cfg    *ACMEConfig
	cache  *certmagic.Cache
	magic  *certmagic.Config
	issuer *certmagic.ACMEIssuer
}

// newACMEManager makes the certmagic configuration of c, logging through
// logger. The cache's own maintenance goroutine, which NewCache starts, is
// stopped at once: renewals are the acme coroutine's job, so that they run
// supervised (the cache keeps serving certificates; RenewCheckInterval
// still tells certmagic how often renewals are checked).
func newACMEManager(c *ACMEConfig, logger hclog.Logger) *acmeManager {
	zl := zapLogger(logger)
	m := &acmeManager{cfg: c}
	m.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert:   func(certmagic.Certificate) (*certmagic.Config, error) { return m.magic, nil },
		RenewCheckInterval: c.RenewInterval,
		OCSPCheckInterval:  24 * time.Hour,
		Logger:             zl,
	})
	m.cache.Stop()
	m.magic = certmagic.New(m.cache, certmagic.Config{
		Storage: &certmagic.FileStorage{Path: c.Storage},
		Logger:  zl,
		// Stapling asks the CA's OCSP responder, which a private CA may
		// not have; a failure only logs.
		OCSP: certmagic.OCSPConfig{DisableStapling: true},
	})
	m.issuer = certmagic.NewACMEIssuer(m.magic, certmagic.ACMEIssuer{
		CA:           c.CA,
		Email:        c.Email,
		Agreed:       true,
		TrustedRoots: c.roots,
		Logger:       zl,

		DisableHTTPChallenge:    !c.HTTP01,
		DisableTLSALPNChallenge: !c.TLSALPN01,
	})
	m.magic.Issuers = []certmagic.Issuer{m.issuer}
	return m
}

// setPorts tells the challenge solvers the ports the server answers
// challenges on: TLS-ALPN-01 on the TLS port, HTTP-01 on the redirect
// server's (0: certmagic binds port 80 while it solves, if it is free).
func (m *acmeManager) setPorts(httpsPort, httpPort int) {
	m.issuer.AltTLSALPNPort = httpsPort
	if httpPort > 0 {
		m.issuer.AltHTTPPort = httpPort
	}
}

// tlsConfig returns conf with certmagic choosing the certificate (and
// answering TLS-ALPN-01 challenges, whose protocol ALPN then offers).
func (m *acmeManager) tlsConfig(conf *tls.Config) *tls.Config {
	conf.GetCertificate = m.magic.GetCertificate
	conf.NextProtos = append(conf.NextProtos, "acme-tls/1")
	return conf
}

// httpHandler returns next with HTTP-01 challenges answered first.
func (m *acmeManager) httpHandler(next http.Handler) http.Handler {
	return m.issuer.HTTPChallengeHandler(next)
}

// run is the acme coroutine: it obtains (or loads from storage) the
// certificates of every domain, reports ready, then every RenewInterval
// renews those due for it, until ctx ends. An error (a certificate that
// cannot be obtained or renewed) ends the run; the scheduler restarts it
// with backoff, and /health shows the error.
func (m *acmeManager) run(ctx context.Context, bound <-chan struct{}) error {
	select {
	case <-bound: // the challenges are answered by the server
	case <-ctx.Done():
		return nil
	}
	if err := m.magic.ManageSync(ctx, m.cfg.Domains); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("acme: obtaining certificates for %s from %s: %w", strings.Join(m.cfg.Domains, ", "), m.cfg.CA, err)
	}
	Ready(ctx)
	t := time.NewTicker(m.cfg.RenewInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err := m.cache.RenewManagedCertificates(ctx); err != nil && ctx.Err() == nil {
			return fmt.Errorf("acme: renewing certificates for %s: %w", strings.Join(m.cfg.Domains, ", "), err)
		}
	}
}

// ACMECoroutine returns the coroutine that obtains and renews the server's
// certificates when its section has acme = true, else nil. It waits until
// the server has bound (it answers the TLS-ALPN-01 challenges), obtains the
// certificates (or loads them from acme_storage) and reports ready, then
// checks them for renewal every acme_renew_interval; an error ends its run
// (the scheduler restarts it). Runner.New adds it to the runner's
// scheduler, not required, as ACMECoroutineName; a server made with
// NewHTTPServer alone runs it itself.
func (s *HTTPServer) ACMECoroutine() entrypoints.Coroutine {
	if s.cfg.TLS == nil || s.cfg.TLS.ACME == nil {
		return nil
	}
	s.acmeSupervised.Store(true)
	return func(ctx context.Context) error {
		select {
		case <-s.bound: // ServeListener made s.acme before
		case <-ctx.Done():
			return nil
		}
		return s.acme.run(ctx, s.bound)
	}
}

// addrOf returns ln's address, nil for a nil ln.
func addrOf(ln net.Listener) net.Addr {
	if ln == nil {
		return nil
	}
	return ln.Addr()
}

// portOf returns the port of addr as a number, 0 when it has none.
func portOf(addr net.Addr) int {
	if addr == nil {
		return 0
	}
	_, p, err := net.SplitHostPort(addr.String())
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(p)
	return n
}

// zapLogger returns a zap logger writing to logger (certmagic logs with
// zap): levels map to hclog's through the "[LEVEL]" prefix hclog infers.
func zapLogger(logger hclog.Logger) *zap.Logger {
	w := logger.StandardWriter(&hclog.StandardLoggerOptions{InferLevels: true})
	enc := zapcore.NewConsoleEncoder(zapcore.EncoderConfig{
		LevelKey:       "level",
		NameKey:        "logger",
		MessageKey:     "msg",
		EncodeLevel:    func(l zapcore.Level, e zapcore.PrimitiveArrayEncoder) { e.AppendString("[" + l.CapitalString() + "]") },
		EncodeDuration: zapcore.StringDurationEncoder,
		EncodeTime:     zapcore.ISO8601TimeEncoder,
	})
	return zap.New(zapcore.NewCore(enc, zapcore.AddSync(w), zapcore.InfoLevel))
}
