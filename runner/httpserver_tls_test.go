package runner

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/paster-dev/paster/entrypoints"
	"github.com/paster-dev/paster/internal/testsync"
	"github.com/paster-dev/paster/runner/tlstest"
)

// pki is a CA and a server certificate it signed, written in dir as
// cert.pem, key.pem, both.pem (cert and key in one file) and ca.pem.
type pki struct {
	ca                        *tlstest.CA
	dir                       string
	cert, key, both, caFile   string
	certPEM, keyPEM, otherKey []byte
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	p := &pki{ca: tlstest.NewCA(t, "test CA"), dir: t.TempDir()}
	p.certPEM, p.keyPEM = p.ca.Issue(t, "server")
	_, p.otherKey = p.ca.Issue(t, "other")
	p.cert = tlstest.WriteFile(t, p.dir, "cert.pem", p.certPEM)
	p.key = tlstest.WriteFile(t, p.dir, "key.pem", p.keyPEM)
	p.both = tlstest.WriteFile(t, p.dir, "both.pem", append(append([]byte(nil), p.certPEM...), p.keyPEM...))
	p.caFile = tlstest.WriteFile(t, p.dir, "ca.pem", p.ca.PEM)
	return p
}

// TestTLSKeyErrors: every TLS key a user can get wrong is an error naming
// the file, line, section and key (what paster check reports).
func TestTLSKeyErrors(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	badKey := tlstest.WriteFile(t, p.dir, "other-key.pem", p.otherKey)
	garbage := tlstest.WriteFile(t, p.dir, "garbage.pem", []byte("not a certificate"))
	missing := filepath.Join(p.dir, "missing.pem")
	tests := []struct {
		name    string
		pairs   []string
		errKey  string
		wantErr string
	}{
		{"missing key file", []string{"cert_file", p.cert, "key_file", missing}, "key_file", "no such file"},
		{"missing cert file", []string{"cert_file", missing, "key_file", p.key}, "cert_file", "no such file"},
		{"cert without key", []string{"cert_file", p.cert}, "cert_file", "needs key_file"},
		{"key without cert", []string{"key_file", p.key}, "key_file", "needs cert_file"},
		{"key of another certificate", []string{"cert_file", p.cert, "key_file", badKey}, "cert_file", "private key does not match"},
		{"ssl_pem without key", []string{"ssl_pem", p.cert}, "ssl_pem", "certificate and its private key"},
		{"ssl_pem missing", []string{"ssl_pem", missing}, "ssl_pem", "no such file"},
		{"two sources", []string{"ssl_pem", "*", "cert_file", p.cert, "key_file", p.key}, "ssl_pem", "more than one certificate source"},
		{"unknown TLS version", []string{"ssl_pem", "*", "tls_min_version", "1.4"}, "tls_min_version", "unknown TLS version"},
		{"client_ca missing", []string{"ssl_pem", "*", "client_ca", missing}, "client_ca", "no such file"},
		{"client_ca not PEM", []string{"ssl_pem", "*", "client_ca", garbage}, "client_ca", "no PEM certificate"},
		{"tls key without TLS", []string{"tls_min_version", "1.3"}, "tls_min_version", "needs TLS"},
		{"redirect without TLS", []string{"redirect_http", ":80"}, "redirect_http", "needs TLS"},
		{"bad redirect address", []string{"ssl_pem", "*", "redirect_http", "80"}, "redirect_http", "not host:port"},
		{"h2c over TLS", []string{"ssl_pem", "*", "h2c", "true"}, "h2c", "over TLS, HTTP/2 is on already"},
		{"bad h2c", []string{"h2c", "maybe"}, "h2c", ""},
		{"acme without domains", []string{"acme", "true"}, "acme", "needs domains"},
		{"acme key without acme", []string{"domains", "example.com"}, "domains", "needs acme = true"},
		{"acme ca not https", []string{"acme", "true", "domains", "example.com", "acme_ca", "http://ca/dir"}, "acme_ca", "not an https://"},
		{"acme ca root missing", []string{"acme", "true", "domains", "example.com", "acme_ca_root", missing}, "acme_ca_root", "no such file"},
		{"unknown acme challenge", []string{"acme", "true", "domains", "example.com", "acme_challenges", "dns-01"}, "acme_challenges", "unknown challenge"},
		{"acme renew interval 0", []string{"acme", "true", "domains", "example.com", "acme_renew_interval", "0"}, "acme_renew_interval", "never be renewed"},
		{"acme and files", []string{"acme", "true", "domains", "example.com", "cert_file", p.cert, "key_file", p.key}, "acme", "more than one certificate source"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			logger, _ := testLogger(t)
			_, err := NewHTTPServer(localOf(tt.pairs...), logger)
			if err == nil {
				t.Fatal("no error")
			}
			for _, want := range []string{tt.wantErr, "test.ini:7 [server:main] " + tt.errKey + ":"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
		})
	}
}

// TestTLSRelativePaths: a relative certificate path is taken from the
// directory of the INI file the key is written in, not the working
// directory.
func TestTLSRelativePaths(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	where := entrypoints.Location{File: filepath.Join(p.dir, "site.ini"), Line: 3, Section: "server:main"}
	local := entrypoints.Local{}.With("cert_file", "cert.pem", where).With("key_file", "key.pem", where)
	cfg, err := ParseHTTPConfig(local)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.TLS == nil || cfg.TLS.CertFile != p.cert || cfg.TLS.KeyFile != p.key {
		t.Fatalf("TLS config %+v, want cert %s and key %s", cfg.TLS, p.cert, p.key)
	}
	if got, want := strings.Join(cfg.TLS.Files(), " "), p.cert+" "+p.key; got != want {
		t.Errorf("Files() = %s, want %s", got, want)
	}
}

// protoApp answers with the protocol and whether the request came over TLS.
var protoApp = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	fmt.Fprintf(w, "%s tls=%v", r.Proto, r.TLS != nil)
})

// TestTLSSources serves HTTPS from each certificate source with a real
// client: HTTP/2 is negotiated by default, HTTP/1.1 still served to a
// client that offers only it.
func TestTLSSources(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	tests := []struct {
		name  string
		pairs []string
		roots *x509.CertPool // nil: self-signed, checked by its names
	}{
		{"cert_file and key_file", []string{"cert_file", p.cert, "key_file", p.key}, p.ca.Pool()},
		{"ssl_pem", []string{"ssl_pem", p.both}, p.ca.Pool()},
		{"ssl_pem = *", []string{"ssl_pem", "*"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := serve(t, protoApp, tt.pairs...)
			roots := tt.roots
			if roots == nil {
				// The self-signed certificate is its own root.
				cs := handshake(t, s.addr, &tls.Config{InsecureSkipVerify: true})
				leaf := cs.PeerCertificates[0]
				if err := leaf.VerifyHostname("127.0.0.1"); err != nil {
					t.Fatalf("self-signed certificate: %v", err)
				}
				if err := leaf.VerifyHostname("localhost"); err != nil {
					t.Fatalf("self-signed certificate: %v", err)
				}
				roots = x509.NewCertPool()
				roots.AddCert(leaf)
			}
			if got := getBody(t, tlstest.Client(roots), "https://"+s.addr+"/"); got != "HTTP/2.0 tls=true" {
				t.Errorf("HTTP/2 client got %q", got)
			}
			h1 := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
			if got := getBody(t, h1, "https://"+s.addr+"/"); got != "HTTP/1.1 tls=true" {
				t.Errorf("HTTP/1.1 client got %q", got)
			}
		})
	}
}

// TestTLSMinVersionAndClientCA: tls_min_version refuses older clients;
// client_ca refuses clients without a certificate it signed.
func TestTLSMinVersionAndClientCA(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	t.Run("min version", func(t *testing.T) {
		t.Parallel()
		s := serve(t, protoApp, "ssl_pem", p.both, "tls_min_version", "1.3")
		if _, err := tls.Dial("tcp", s.addr, &tls.Config{RootCAs: p.ca.Pool(), MaxVersion: tls.VersionTLS12}); err == nil {
			t.Error("a TLS 1.2 client was served with tls_min_version = 1.3")
		}
		if cs := handshake(t, s.addr, &tls.Config{RootCAs: p.ca.Pool()}); cs.Version != tls.VersionTLS13 {
			t.Errorf("version %x, want TLS 1.3", cs.Version)
		}
	})
	t.Run("default refuses 1.1", func(t *testing.T) {
		t.Parallel()
		s := serve(t, protoApp, "ssl_pem", p.both)
		if _, err := tls.Dial("tcp", s.addr, &tls.Config{RootCAs: p.ca.Pool(), MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}); err == nil {
			t.Error("a TLS 1.1 client was served by default")
		}
	})
	t.Run("client_ca", func(t *testing.T) {
		t.Parallel()
		s := serve(t, protoApp, "ssl_pem", p.both, "client_ca", p.caFile)
		if _, err := tlstest.Client(p.ca.Pool()).Get("https://" + s.addr + "/"); err == nil {
			t.Error("a client without a certificate was served")
		}
		stranger := tlstest.NewCA(t, "other CA")
		if _, err := tlstest.Client(p.ca.Pool(), stranger.KeyPair(t, "mallory")).Get("https://" + s.addr + "/"); err == nil {
			t.Error("a client with a certificate of another CA was served")
		}
		if got := getBody(t, tlstest.Client(p.ca.Pool(), p.ca.KeyPair(t, "alice")), "https://"+s.addr+"/"); got != "HTTP/2.0 tls=true" {
			t.Errorf("client with a certificate got %q", got)
		}
	})
}

// TestRedirectHTTP: redirect_http answers plain HTTP with 308 to the same
// host and URI on the TLS server's port, and stops with the server.
func TestRedirectHTTP(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	s := serve(t, protoApp, "ssl_pem", p.both, "redirect_http", "127.0.0.1:0")
	// The server logs the redirect's address after it is bound.
	var m string
	testsync.WaitFor(t, "the redirect server in the log", func() bool {
		m = s.log.String()
		return strings.Contains(m, "redirecting to https: addr=")
	})
	i := strings.Index(m, "redirecting to https: addr=")
	raddr := strings.Fields(m[i+len("redirecting to https: addr="):])[0]
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Get("http://" + raddr + "/a/b?c=d")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	_, port, _ := net.SplitHostPort(s.addr)
	if want := "https://127.0.0.1:" + port + "/a/b?c=d"; resp.StatusCode != http.StatusPermanentRedirect || resp.Header.Get("Location") != want {
		t.Fatalf("got %d Location %q, want 308 %q", resp.StatusCode, resp.Header.Get("Location"), want)
	}
	// The redirect leads to the TLS server.
	if got := getBody(t, tlstest.Client(p.ca.Pool()), resp.Header.Get("Location")); got != "HTTP/2.0 tls=true" {
		t.Errorf("following the redirect got %q", got)
	}
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
	if c, err := net.DialTimeout("tcp", raddr, time.Second); err == nil {
		c.Close()
		t.Error("the redirect server still accepts after the server stopped")
	}
}

// TestH2C: h2c = true serves HTTP/2 with prior knowledge over cleartext,
// and HTTP/1.1 beside it; without it, an HTTP/2 preface is not served.
func TestH2C(t *testing.T) {
	t.Parallel()
	h2c := func() *http.Client {
		p := new(http.Protocols)
		p.SetUnencryptedHTTP2(true)
		return &http.Client{Transport: &http.Transport{Protocols: p}, Timeout: 20 * time.Second}
	}
	s := serve(t, protoApp, "h2c", "true")
	if got := getBody(t, h2c(), "http://"+s.addr+"/"); got != "HTTP/2.0 tls=false" {
		t.Errorf("h2c client got %q", got)
	}
	if got := getBody(t, newClient(), "http://"+s.addr+"/"); got != "HTTP/1.1 tls=false" {
		t.Errorf("HTTP/1.1 client got %q", got)
	}
	plain := serve(t, protoApp)
	if _, err := h2c().Get("http://" + plain.addr + "/"); err == nil {
		t.Error("h2c served without h2c = true")
	}
}

func handshake(t *testing.T, addr string, conf *tls.Config) tls.ConnectionState {
	t.Helper()
	c, err := tls.Dial("tcp", addr, conf)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.ConnectionState()
}

func getBody(t *testing.T, c *http.Client, url string) string {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return string(b)
}

// TestHTTP2Runner: a Runner serving over HTTP/2 (TLS by ALPN, and h2c)
// streams a first line at once (flush), parks the request on the Core until
// a Signal sent on the same HTTP/2 connection wakes it, and a client that
// cancels its request cancels the handler's context (its wait ends).
func TestHTTP2Runner(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	for _, tc := range []struct {
		name, scheme string
		pairs        []string
		client       *http.Client
	}{
		{"tls", "https", []string{"ssl_pem", p.both}, tlstest.Client(p.ca.Pool())},
		{"h2c", "http", []string{"h2c", "true"}, func() *http.Client {
			pr := new(http.Protocols)
			pr.SetUnencryptedHTTP2(true)
			return &http.Client{Transport: &http.Transport{Protocols: pr}, Timeout: 20 * time.Second}
		}()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			host := newTestCore(t, CoreOptions{})
			ended := make(chan error, 1)
			mux := http.NewServeMux()
			mux.Handle("/", waitApp())
			mux.HandleFunc("/stream", func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprintf(w, "first over %s\n", r.Proto)
				if err := http.NewResponseController(w).Flush(); err != nil {
					t.Errorf("flush: %v", err)
				}
				v, err := CoreFrom(r.Context()).WaitForSignal(r.Context(), "abc", NoTimeout)
				if err != nil {
					ended <- err
					return
				}
				fmt.Fprintf(w, "then %s\n", v)
			})
			local := serverLocal(tc.pairs...)
			r, err := New(mux, local)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(WithCore(context.Background(), host))
			done := startRun(t, r, ctx)
			t.Cleanup(func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("Run: %v", err)
				}
			})
			<-r.HTTP.Bound()
			base := tc.scheme + "://" + r.HTTP.Addr().String()

			open := func(ctx context.Context) (*http.Response, *bufio.Reader) {
				req, _ := http.NewRequestWithContext(ctx, "GET", base+"/stream", nil)
				resp, err := tc.client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				br := bufio.NewReader(resp.Body)
				if line, err := br.ReadString('\n'); err != nil || line != "first over HTTP/2.0\n" {
					t.Fatalf("first line %q, %v", line, err)
				}
				return resp, br
			}
			resp, br := open(context.Background())
			defer resp.Body.Close()
			cctx, ccancel := context.WithCancel(context.Background())
			resp2, _ := open(cctx)
			defer resp2.Body.Close()
			testsync.WaitFor(t, "two parked requests", func() bool { return host.Stats().Waiters == 2 })
			ccancel()
			if err := testsync.Recv(t, "the cancelled handler's end", ended); !errors.Is(err, context.Canceled) {
				t.Errorf("the cancelled request's wait ended with %v, want context.Canceled", err)
			}
			testsync.WaitFor(t, "one parked request", func() bool { return host.Stats().Waiters == 1 })
			if got := getBody(t, tc.client, base+"/signal?msg=woken"); got != "1" {
				t.Errorf("signal woke %q, want 1", got)
			}
			if rest, err := io.ReadAll(br); err != nil || string(rest) != "then woken\n" {
				t.Errorf("the parked request's rest %q, %v", rest, err)
			}
		})
	}
}

// TestRedirectToHTTPSTarget: the redirect keeps host and URI and names the
// TLS server's port unless it is 443, or unknown (0: a unix socket behind a
// proxy on 443).
func TestRedirectToHTTPSTarget(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ host, port, want string }{
		{"example.com:8080", "8443", "https://example.com:8443/p?q=1"},
		{"example.com", "443", "https://example.com/p?q=1"},
		{"example.com:80", "0", "https://example.com/p?q=1"},
		{"[::1]:80", "8443", "https://[::1]:8443/p?q=1"},
	} {
		w := httptest.NewRecorder()
		r := httptest.NewRequest("GET", "http://"+tc.host+"/p?q=1", nil)
		redirectToHTTPS(tc.port).ServeHTTP(w, r)
		if w.Code != http.StatusPermanentRedirect || w.Header().Get("Location") != tc.want {
			t.Errorf("Host %s, port %s: %d %q, want 308 %q", tc.host, tc.port, w.Code, w.Header().Get("Location"), tc.want)
		}
	}
}
