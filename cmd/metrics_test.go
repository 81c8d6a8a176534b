package pastercmd

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/paster-dev/paster/internal/testsync"
)

// TestRejectionsThroughServe: under paster serve, a request the server
// answers itself — 413 for a declared body over max_body_bytes, 431 for
// headers over max_header_bytes (net/http's own reply) — shows in the
// access log and in /metrics like any other response (issue 13.7), counted
// under the mount the request was for.
func TestRejectionsThroughServe(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	port := testsync.FreePort(t)
	logFile := filepath.Join(dir, "access.log")
	ini := fmt.Sprintf(`[server:main]
use = egg:paster#http
host = 127.0.0.1
port = %d
max_body_bytes = 1k
max_header_bytes = 4k

[composite:main]
use = egg:paster#urlmap
/hello = hello
/health = health
/metrics = metrics
filter-with = access-log

[app:hello]
use = plugin:paster-plugin-hello#main
greeting = Hello
name = rejections

[app:health]
use = egg:paster#health

[app:metrics]
use = egg:paster#metrics

[filter:access-log]
use = egg:paster#translogger
format = "%%%%r" %%%%>s
output = %s
`, port, logFile)
	if err := os.WriteFile(filepath.Join(dir, "serve.ini"), []byte(ini), 0o644); err != nil {
		t.Fatal(err)
	}
	copyPlugin(t, dir, "")
	p := startServe(t, dir, port, "serve.ini")

	tests := []struct {
		head string
		code int
		log  string
	}{
		{"POST /hello HTTP/1.1\r\nHost: a\r\nContent-Length: 5000", 413, `"POST /hello HTTP/1.1" 413`},
		{"GET /hello/big HTTP/1.1\r\nHost: a\r\nX-Big: " + strings.Repeat("x", 16<<10), 431, `"GET /hello/big HTTP/1.1" 431`},
		{"GET /hello HTTP/1.1\r\nHost: a", 200, `"GET /hello HTTP/1.1" 200`},
	}
	for _, tt := range tests {
		c, err := net.DialTimeout("tcp", strings.TrimPrefix(p.base, "http://"), 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(c, "%s\r\nConnection: close\r\n\r\n", tt.head)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		c.Close()
		if err != nil {
			t.Fatalf("%.30q: %v", tt.head, err)
		}
		if resp.StatusCode != tt.code {
			t.Errorf("%.30q: %d, want %d", tt.head, resp.StatusCode, tt.code)
		}
	}
	// A request is counted once its handler returned, which may be just
	// after the client read the response: poll.
	wants := []string{
		`paster_http_requests_total{app="/hello",code="413"} 1`,
		`paster_http_requests_total{app="/hello",code="431"} 1`,
		`paster_http_requests_total{app="/hello",code="200"} 1`,
	}
	p.waitFor("/metrics to count "+strings.Join(wants, ", "), func() bool {
		_, metrics := p.get("/metrics")
		for _, want := range wants {
			if !strings.Contains(metrics, want+"\n") {
				return false
			}
		}
		return true
	})
	p.waitFor("the access log", func() bool {
		b, _ := os.ReadFile(logFile)
		return strings.Count(string(b), "\n") >= len(tests)
	})
	b, _ := os.ReadFile(logFile)
	for _, tt := range tests {
		if !strings.Contains(string(b), tt.log+"\n") {
			t.Errorf("access log lacks %s:\n%s", tt.log, b)
		}
	}
}
