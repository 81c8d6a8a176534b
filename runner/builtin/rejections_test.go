package builtin

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
		io.Copy(io.Discard, r.Body) // over max_body_bytes: the server replaces the 200 by 413
		w.Write([]byte("ok"))
	})
	metrics, err := metricsFactory(nil, localOf())
	if err != nil {
		t.Fatal(err)
	}
	m, err := urlmapFactory(&fakeLoader{apps: map[string]http.Handler{"ok": ok, "metrics": metrics}}, nil,
		localOf("/ok", "ok", "/metrics", "metrics"))
	if err != nil {
		t.Fatal(err)
	}
	pre, err := prefixFactory(m, nil, localOf())
	if err != nil {
		t.Fatal(err)
	}
	tl, err := transloggerFactory(pre, nil, localOf("format", `%h "%r" %>s`, "output", logFile))
	if err != nil {
		t.Fatal(err)
	}
	reg := observe.New()
	addr := strings.TrimPrefix(serveHTTPWith(t, observe.Instrument(reg, "main", tl), "max_body_bytes", "1k", "max_header_bytes", "4k"), "http://")

	big := strings.Repeat("x", 16<<10)
	tests := []struct {
		head string
		code int
		log  string
	}{
		{"GET /nope HTTP/1.1\r\nHost: a\r\nConnection: close", 404, `127.0.0.1 "GET /nope HTTP/1.1" 404`},
		{"POST /ok HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\nX-Forwarded-For: 203.0.113.7", 413, `203.0.113.7 "POST /ok HTTP/1.1" 413`},
		{"GET /ok?q=1 HTTP/1.1\r\nHost: a\r\nX-Big: " + big, 431, `127.0.0.1 "GET /ok?q=1 HTTP/1.1" 431`},
		{"BLAH\r\nHost: a", 400, `127.0.0.1 "-" 400`},
		{"POST /ok/chunked HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n" + big[:2048] + "\r\n0\r\n", 413, `127.0.0.1 "POST /ok/chunked HTTP/1.1" 413`},
	}
	for _, tt := range tests {
		resp, _ := rawRequest(t, addr, tt.head)
		if resp.StatusCode != tt.code {
			t.Errorf("%.40q: %d, want %d", tt.head, resp.StatusCode, tt.code)
		}
	}
	_, body, _ := do(t, nil, newRequest(t, "GET", "http://"+addr+"/metrics", nil))
	for _, want := range []string{
		`paster_http_requests_total{app="main",code="404"} 1`,
		`paster_http_requests_total{app="/ok",code="413"} 2`,
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
