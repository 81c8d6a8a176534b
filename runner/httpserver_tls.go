package runner

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/paster-dev/paster/entrypoints"
)

// TLSKeys are the keys of a server section that turn TLS, HTTP/2 over
// cleartext and the redirect server on (NewHTTPServer reads them; they
// end HTTPServerKeys).
var TLSKeys = []string{
	"cert_file", "key_file", "ssl_pem", "tls_min_version", "client_ca", "redirect_http", "h2c",
	"acme", "domains", "acme_email", "acme_ca", "acme_ca_root", "acme_storage", "acme_renew_interval", "acme_challenges",
}

// DefaultTLSMinVersion is the oldest TLS version served unless
// tls_min_version says otherwise.
const DefaultTLSMinVersion = tls.VersionTLS12

// TLSConfig is the TLS part of a server section (HTTPConfig.TLS). Paths
// are absolute: a relative one is taken from the directory of the file the
// key is written in.
type TLSConfig struct {
	// CertFile and KeyFile are cert_file and key_file: the certificate
	// (chain) and its private key, PEM.
	CertFile, KeyFile string
	// PEMFile is ssl_pem (Paste's key): certificate and key in one PEM
	// file. "" when not set or when SelfSigned.
	PEMFile string
	// SelfSigned is ssl_pem = *: a self-signed certificate for the
	// server's host, localhost and the loopback addresses, made when the
	// server is made (for development; clients must skip verification).
	SelfSigned bool
	// MinVersion is tls_min_version (1.0, 1.1, 1.2 or 1.3; default 1.2), a
	// crypto/tls version number.
	MinVersion uint16
	// ClientCA is client_ca: a PEM file of the authorities that sign the
	// client certificates; set, every client must present one (mutual
	// TLS).
	ClientCA string
	// ACME is set when acme = true: certificates are obtained and renewed
	// from an ACME CA (see ACMEConfig) instead of read from files.
	ACME *ACMEConfig

	cert      *tls.Certificate // from CertFile+KeyFile or PEMFile
	clientCAs *x509.CertPool
}

// Files returns the files the TLS settings read (certificate, key, client
// CA): a change of one of them must reach a running server, which the
// engine does by restarting the server when their content changed, and
// --reload by watching them.
func (c *TLSConfig) Files() []string {
	if c == nil {
		return nil
	}
	var out []string
	for _, f := range []string{c.CertFile, c.KeyFile, c.PEMFile, c.ClientCA} {
		if f != "" {
			out = append(out, f)
		}
	}
	if c.ACME != nil && c.ACME.CARoot != "" {
		out = append(out, c.ACME.CARoot)
	}
	return out
}

// confPath returns the value of key as a path: trimmed, and joined to the
// directory of the file the key is written in when relative.
func confPath(local entrypoints.Local, key string) string {
	v := strings.TrimSpace(local.Get(key))
	if v == "" || filepath.IsAbs(v) {
		return v
	}
	if f := local.Where(key).File; f != "" {
		return filepath.Join(filepath.Dir(f), v)
	}
	return v
}

// tlsVersions are the spellings tls_min_version accepts.
var tlsVersions = map[string]uint16{
	"1.0": tls.VersionTLS10, "1.1": tls.VersionTLS11, "1.2": tls.VersionTLS12, "1.3": tls.VersionTLS13,
}

// parseTLS reads the TLS keys of local into cfg: TLS, H2C and
// RedirectHTTP. Certificate, key and CA files are read now, so that a
// missing or bad one is an error naming the key (paster check reports it;
// a reload that meets it keeps the server it has).
func parseTLS(local entrypoints.Local, cfg *HTTPConfig) error {
	var err error
	if cfg.H2C, err = local.Bool("h2c", false); err != nil {
		return err
	}
	acme, err := parseACME(local)
	if err != nil {
		return err
	}
	certFile, keyFile, pem := confPath(local, "cert_file"), confPath(local, "key_file"), strings.TrimSpace(local.Get("ssl_pem"))
	sources := 0
	for _, set := range []bool{certFile != "" || keyFile != "", pem != "", acme != nil} {
		if set {
			sources++
		}
	}
	if sources == 0 {
		for _, k := range []string{"tls_min_version", "client_ca", "redirect_http"} {
			if _, set := local.Lookup(k); set {
				return local.Errorf(k, "needs TLS: set cert_file and key_file, ssl_pem, or acme = true")
			}
		}
		return nil
	}
	if sources > 1 {
		for _, k := range []string{"ssl_pem", "acme", "cert_file", "key_file"} {
			if _, set := local.Lookup(k); set {
				return local.Errorf(k, "more than one certificate source: use one of cert_file and key_file, ssl_pem, or acme = true")
			}
		}
	}
	if cfg.H2C {
		return local.Errorf("h2c", "h2c is HTTP/2 over cleartext; over TLS, HTTP/2 is on already (negotiated with ALPN)")
	}
	c := &TLSConfig{ACME: acme, MinVersion: DefaultTLSMinVersion}
	if v, set := local.Lookup("tls_min_version"); set {
		s := strings.TrimPrefix(strings.TrimPrefix(strings.ToLower(strings.TrimSpace(v)), "tls"), "v")
		ver, ok := tlsVersions[s]
		if !ok {
			return local.Errorf("tls_min_version", "unknown TLS version %q (1.0, 1.1, 1.2 or 1.3)", v)
		}
		c.MinVersion = ver
	}
	switch {
	case pem == "*":
		c.SelfSigned = true
	case pem != "":
		c.PEMFile = confPath(local, "ssl_pem")
		data, err := os.ReadFile(c.PEMFile)
		if err != nil {
			return local.Errorf("ssl_pem", "%v", err)
		}
		cert, err := tls.X509KeyPair(data, data)
		if err != nil {
			return local.Errorf("ssl_pem", "%s: %v (the file must hold the certificate and its private key)", c.PEMFile, err)
		}
		c.cert = &cert
	case acme == nil:
		if certFile == "" {
			return local.Errorf("key_file", "key_file needs cert_file")
		}
		if keyFile == "" {
			return local.Errorf("cert_file", "cert_file needs key_file (or ssl_pem, for certificate and key in one file)")
		}
		c.CertFile, c.KeyFile = certFile, keyFile
		for _, k := range []string{"cert_file", "key_file"} {
			if _, err := os.Stat(confPath(local, k)); err != nil {
				return local.Errorf(k, "%v", err)
			}
		}
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return local.Errorf("cert_file", "%s with key_file %s: %v", certFile, keyFile, err)
		}
		c.cert = &cert
	}
	if c.ClientCA = confPath(local, "client_ca"); c.ClientCA != "" {
		data, err := os.ReadFile(c.ClientCA)
		if err != nil {
			return local.Errorf("client_ca", "%v", err)
		}
		c.clientCAs = x509.NewCertPool()
		if !c.clientCAs.AppendCertsFromPEM(data) {
			return local.Errorf("client_ca", "%s: no PEM certificate in it", c.ClientCA)
		}
	}
	if v := strings.TrimSpace(local.Get("redirect_http")); v != "" {
		_, p, err := net.SplitHostPort(v)
		if err != nil {
			return local.Errorf("redirect_http", "not host:port or :port: %v", err)
		}
		if n, err := strconv.Atoi(p); err != nil || n < 0 || n > 65535 {
			return local.Errorf("redirect_http", "bad port in %q", v)
		}
		cfg.RedirectHTTP = v
	}
	cfg.TLS = c
	return nil
}

// serverTLS returns the crypto/tls configuration the server serves with:
// its certificate (a self-signed one made now for ssl_pem = *), the
// minimum version, the client authorities, and ALPN offering HTTP/2 and
// HTTP/1.1. host is the server's host, named in a self-signed
// certificate.
func serverTLS(c *TLSConfig, host string) (*tls.Config, error) {
	conf := &tls.Config{
		MinVersion: c.MinVersion,
		NextProtos: []string{"h2", "http/1.1"},
	}
	if c.clientCAs != nil {
		conf.ClientCAs = c.clientCAs
		conf.ClientAuth = tls.RequireAndVerifyClientCert
	}
	switch {
	case c.SelfSigned:
		cert, err := selfSigned(host)
		if err != nil {
			return nil, fmt.Errorf("ssl_pem = *: making a self-signed certificate: %w", err)
		}
		conf.Certificates = []tls.Certificate{cert}
	case c.cert != nil:
		conf.Certificates = []tls.Certificate{*c.cert}
	}
	return conf, nil
}

// selfSigned makes a certificate for development, as Paste's ssl_pem = *
// did: ECDSA P-256, valid from an hour ago for a year, for host (when it
// is a name or an address other than the unspecified one), localhost,
// 127.0.0.1 and ::1.
func selfSigned(host string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"paster development"}, CommonName: "localhost"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	if ip := net.ParseIP(host); ip != nil {
		if !ip.IsUnspecified() && !ip.IsLoopback() {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		}
	} else if host != "" && host != "localhost" {
		tmpl.DNSNames = append(tmpl.DNSNames, host)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// redirectToHTTPS answers every request with 308 Permanent Redirect to the
// same host and URI over https on port (left out when 443, or 0: the TLS
// server is on a unix socket, behind a proxy listening on 443).
func redirectToHTTPS(port string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		if port != "443" && port != "0" {
			host = net.JoinHostPort(strings.Trim(host, "[]"), port)
		}
		w.Header().Set("Connection", "close")
		http.Redirect(w, r, "https://"+host+r.URL.RequestURI(), http.StatusPermanentRedirect)
	})
}

// serverLogWriter is net/http's ErrorLog: its lines are warnings, except
// failed TLS handshakes, which are debug messages: every port scan, load
// balancer probe and client that gives up on a certificate makes one.
type serverLogWriter struct{ logger hclog.Logger }

func (w serverLogWriter) Write(p []byte) (int, error) {
	msg := strings.TrimRight(string(p), "\n")
	if strings.HasPrefix(msg, "http: TLS handshake error") {
		w.logger.Debug(msg)
	} else {
		w.logger.Warn(msg)
	}
	return len(p), nil
}
