package runner

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"
	"github.com/miekg/dns"

	"github.com/paster-dev/paster/internal/testsync"
	"github.com/paster-dev/paster/runner/tlstest"
)

// TestACMEPebble: with acme = true, the server obtains a certificate from a
// real ACME server (Pebble, run in this process, validating the
// challenges for real against the server's TLS-ALPN-01 and, through
// redirect_http, HTTP-01 ports on loopback), serves it to a client that
// trusts Pebble's root, and renews it in the background: Pebble issues
// certificates valid for 12s, and the acme coroutine, checking every
// second, serves a new one before the first expires. The coroutine is the
// runner's, ready once the certificate is there (what /health and /metrics
// show of server coroutines).
func TestACMEPebble(t *testing.T) {
	// Pebble reads these when it is made (Setenv: not parallel).
	t.Setenv("PEBBLE_VA_NOSLEEP", "1")
	t.Setenv("PEBBLE_WFE_NONCEREJECT", "0")
	t.Setenv("PEBBLE_AUTHZREUSE", "0")
	for _, challenge := range []string{"tls-alpn-01", "http-01"} {
		// A domain of each run's own: certmagic keeps a renewal's
		// failure (the renewal cut by the previous run's shutdown) per
		// name, process-wide, and would make the next run wait.
		domain := challenge + ".paster.test"
		t.Run(challenge, func(t *testing.T) { testACMEPebble(t, challenge, domain) })
	}
}

// testACMEPebble is TestACMEPebble with only challenge offered, for domain,
// which Pebble's DNS resolves to 127.0.0.1.
func testACMEPebble(t *testing.T, challenge, domain string) {
	// The server's two sockets, bound first so that Pebble's validation
	// knows their ports; the server takes them from the pool.
	pool := NewListenerPool()
	t.Cleanup(func() { pool.Close() })
	bind := func() (string, int) {
		ln, err := pool.Listen("127.0.0.1:0", ListenOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().String(), portOf(ln.Addr())
	}
	httpsAddr, httpsPort := bind()
	httpAddr, httpPort := bind()

	plog := log.New(io.Discard, "pebble ", 0)
	if testing.Verbose() {
		plog.SetOutput(tWriter{t})
	}
	store := db.NewMemoryStore()
	authority := ca.New(plog, store, "", "ecdsa", 0, 1, map[string]ca.Profile{"default": {ValidityPeriod: 12}})
	validator := va.New(plog, httpPort, httpsPort, false, loopbackDNS(t), store)
	front := wfe.New(plog, store, validator, authority, []string{"pebble.letsencrypt.org"}, false, false, 0, 0)
	dirServer := httptest.NewTLSServer(front.Handler())
	t.Cleanup(dirServer.Close)
	dir := t.TempDir()
	dirRoot := tlstest.WriteFile(t, dir, "pebble-directory.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: dirServer.Certificate().Raw}))
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(authority.GetRootCert(0).PEM())

	host, port, _ := net.SplitHostPort(httpsAddr)
	local := serverLocal("host", host, "port", port, "acme", "true", "domains", domain,
		"acme_email", "ops@example.com", "acme_ca", dirServer.URL+"/dir", "acme_ca_root", dirRoot,
		"acme_storage", filepath.Join(dir, "acme"), "acme_renew_interval", "1s", "redirect_http", httpAddr,
		"acme_challenges", challenge)
	r, err := New(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello over "+r.Proto) }), local)
	if err != nil {
		t.Fatal(err)
	}
	logger, logs := testLogger(t)
	r.Logger = logger
	// The process's Scheds, as paster serve gives them: what /health lists
	// as server_coroutines and /metrics as paster_server_coroutine_state.
	var scheds Scheds
	ctx, cancel := context.WithCancel(WithScheds(WithListeners(context.Background(), pool), &scheds))
	done := startRun(t, r, ctx)
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		if t.Failed() {
			t.Logf("server log:\n%s", logs)
		}
	})

	acmeState := func() string {
		for _, st := range scheds.Status() {
			if st.Name == ACMECoroutineName {
				return st.State.String()
			}
		}
		return "absent"
	}
	testsync.WaitFor(t, "the acme coroutine ready (certificate obtained)", func() bool { return acmeState() == "ready" })

	// served returns the serial of the certificate a new connection to
	// domain gets, verified against Pebble's root.
	served := func() string {
		c, err := tls.Dial("tcp", httpsAddr, &tls.Config{RootCAs: roots, ServerName: domain})
		if err != nil {
			t.Fatalf("TLS with Pebble's root: %v", err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	first := served()
	client := tlstest.Client(roots)
	client.Transport.(*http.Transport).TLSClientConfig.ServerName = domain
	if got := getBody(t, client, "https://"+httpsAddr+"/"); got != "hello over HTTP/2.0" {
		t.Errorf("GET over the ACME certificate: %q", got)
	}
	testsync.WaitFor(t, "a renewed certificate served", func() bool { return served() != first })
	if acmeState() != "ready" {
		t.Errorf("acme coroutine %s after renewal, want ready", acmeState())
	}

	// The redirect server still redirects what is not a challenge.
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Get("http://" + httpAddr + "/x")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if want := "https://127.0.0.1:" + strconv.Itoa(httpsPort) + "/x"; resp.Header.Get("Location") != want {
		t.Errorf("redirect to %q, want %q", resp.Header.Get("Location"), want)
	}
}

// tWriter sends Pebble's log to the test's.
type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// loopbackDNS serves DNS over TCP on loopback (as Pebble's validation asks
// it), answering every A question with 127.0.0.1 and no AAAA, and returns
// its address.
func loopbackDNS(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{Listener: ln, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		for _, question := range q.Question {
			if question.Qtype == dns.TypeA {
				m.Answer = append(m.Answer, &dns.A{
					Hdr: dns.RR_Header{Name: question.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
					A:   net.IPv4(127, 0, 0, 1),
				})
			}
		}
		w.WriteMsg(m)
	})}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	return ln.Addr().String()
}
