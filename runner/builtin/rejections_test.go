package builtin

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/paster-dev/paster/runner/observe"
)

// TestServerRejectionsObserved: requests the server answers without
// running the app — 413 for a declared body over max_body_bytes, 431 for a
// header over max_header_bytes (written by net/http itself), 400 for a
// malformed request — are counted in /metrics and written to the access
// log like the app's own 404 for an unmapped path (issue 8.12). Served by
// runner.HTTPServer, as paster serve composes apps: instrumented, with a
// translogger around a urlmap, and the client in the log is the one the
// prefix filter derives.
func TestServerRejectionsObserved(t *testing.T) {
	t.Parallel()
	logFile := filepath.Join(t.TempDir(), "access.log")
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-r.Context().Done() // past handler_timeout: the server answers 503
			return
		}
		io.Copy(io.Discard, r.Body) // over max_body_bytes: the server replaces the 200 by 413
		w.Write([]byte("ok"))
	})
	m := mounted(t, map[string]http.Handler{"/ok": ok})
	pre, err := prefixFactory(m, nil, localOf())
	if err != nil {
		t.Fatal(err)
	}
	tl, err := transloggerFactory(pre, nil, localOf("format", `%h "%r" %>s`, "output", logFile))
	if err != nil {
		t.Fatal(err)
	}
	reg := observe.New()
	app := observe.Instrument(reg, "main", tl)
	limits := []string{"max_body_bytes", "1k", "max_header_bytes", "4k"}
	addr := strings.TrimPrefix(serveHTTPWith(t, app, limits...), "http://")
	// The same app served with handler_timeout, which puts the server's
	// TimeoutHandler between server and app. Only requests whose handlers
	// run no time at all or past the timeout go there, so that a loaded
	// machine cannot change their answers.
	timed := strings.TrimPrefix(serveHTTPWith(t, app, append(limits, "handler_timeout", "1s")...), "http://")

	big := strings.Repeat("x", 16<<10)
	tests := []struct {
		addr string
		head string
		code int
		log  string
	}{
		{addr, "GET /nope HTTP/1.1\r\nHost: a\r\nConnection: close", 404, `127.0.0.1 "GET /nope HTTP/1.1" 404`},
		{addr, "POST /ok HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\nX-Forwarded-For: 203.0.113.7", 413, `203.0.113.7 "POST /ok HTTP/1.1" 413`},
		{timed, "POST /ok/t HTTP/1.1\r\nHost: a\r\nContent-Length: 5000", 413, `127.0.0.1 "POST /ok/t HTTP/1.1" 413`},
		{addr, "GET /ok?q=1 HTTP/1.1\r\nHost: a\r\nX-Big: " + big, 431, `127.0.0.1 "GET /ok?q=1 HTTP/1.1" 431`},
		{addr, "BLAH\r\nHost: a", 400, `127.0.0.1 "-" 400`},
		{timed, "GET /ok/slow HTTP/1.1\r\nHost: a\r\nConnection: close", 503, `127.0.0.1 "GET /ok/slow HTTP/1.1" 503`},
		{addr, "POST /ok/chunked HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n" + big[:2048] + "\r\n0\r\n", 413, `127.0.0.1 "POST /ok/chunked HTTP/1.1" 413`},
	}
	for _, tt := range tests {
		resp, _ := rawRequest(t, tt.addr, tt.head)
		if resp.StatusCode != tt.code {
			t.Errorf("%.40q: %d, want %d", tt.head, resp.StatusCode, tt.code)
		}
	}
	// The app's handler returns after the server answered 503; poll until
	// it has been counted.
	deadline := time.Now().Add(10 * time.Second)
	var body string
	for {
		rec := httptest.NewRecorder()
		reg.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		body = rec.Body.String()
		if strings.Contains(body, `code="503"`) || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, want := range []string{
		`paster_http_requests_total{app="/ok",code="503"} 1`,
		`paster_http_requests_total{app="main",code="404"} 1`,
		`paster_http_requests_total{app="/ok",code="413"} 3`,
		`paster_http_requests_total{app="/ok",code="431"} 1`,
		`paster_http_requests_total{app="main",code="400"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	b, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		if !strings.Contains(string(b), tt.log+"\n") {
			t.Errorf("access log lacks %q:\n%s", tt.log, b)
		}
	}
}
