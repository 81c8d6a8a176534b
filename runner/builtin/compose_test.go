package builtin

import (
	"bufio"
	"compress/gzip"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/paster-dev/paster/entrypoints"
	"github.com/paster-dev/paster/runner"
)

// serveHTTP serves h with runner.HTTPServer on a free port.
func serveHTTP(t *testing.T, h http.Handler) string {
	t.Helper()
	return serveHTTPWith(t, h)
}

// serveHTTPWith serves h with runner.HTTPServer on a free port, configured
// with the server keys in pairs (key, value, ...).
func serveHTTPWith(t *testing.T, h http.Handler, pairs ...string) string {
	t.Helper()
	srv, err := runner.NewHTTPServer(entrypoints.NewLocal(append([]string{"port", "0"}, pairs...)...), hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, h) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	select {
	case <-srv.Bound():
	case err := <-done:
		t.Fatal(err)
	}
	return "http://" + srv.Addr().String()
}

// TestWrappersKeepWriterFeatures: behind translogger and gzip, on the
// paster HTTP server, an app can still flush, hijack and set deadlines.
func TestWrappersKeepWriterFeatures(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		switch r.URL.Path {
		case "/stream":
			if err := rc.SetWriteDeadline(time.Now().Add(time.Minute)); err != nil {
				http.Error(w, "deadline: "+err.Error(), 500)
				return
			}
			if err := rc.EnableFullDuplex(); err != nil {
				http.Error(w, "duplex: "+err.Error(), 500)
				return
			}
			w.Header().Set("Content-Type", "text/plain")
			io.WriteString(w, "first\n")
			if err := rc.Flush(); err != nil {
				http.Error(w, "flush: "+err.Error(), 500)
				return
			}
			<-release
			io.WriteString(w, "second\n")
		case "/hijack":
			c, brw, err := w.(http.Hijacker).Hijack()
			if err != nil {
				http.Error(w, err.Error(), 500)
				return
			}
			defer c.Close()
			brw.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nhijacked")
			brw.Flush()
		}
	})
	dir := t.TempDir()
	gz, err := gzipFactory(app, nil, localOf())
	if err != nil {
		t.Fatal(err)
	}
	h, err := transloggerFactory(gz, map[string]string{"here": dir}, localOf("output", "access.log"))
	if err != nil {
		t.Fatal(err)
	}
	base := serveHTTP(t, h)

	req := newRequest(t, "GET", base+"/stream", nil)
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err := (&http.Transport{DisableCompression: true}).RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	zr, err := gzip.NewReader(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(zr)
	if line, err := br.ReadString('\n'); err != nil || line != "first\n" {
		t.Fatalf("first line %q, %v", line, err)
	}
	close(release)
	if rest, _ := io.ReadAll(br); string(rest) != "second\n" {
		t.Errorf("rest %q", rest)
	}
	resp.Body.Close()

	_, body, _ := do(t, nil, newRequest(t, "GET", base+"/hijack", nil))
	if body != "hijacked" {
		t.Errorf("hijack through the wrappers: %q", body)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "access.log"))
	if !strings.Contains(string(b), `"GET /stream HTTP/1.1" 200`) {
		t.Errorf("access log %q", b)
	}
}

// TestLoadedFromINI loads a composition of built-in entry points through
// the PasteDeploy loader and serves it.
func TestLoadedFromINI(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "public"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "public", "index.html"), []byte("<h1>static</h1>"), 0o644); err != nil {
		t.Fatal(err)
	}
	ini := `
[composite:main]
use = egg:paster#urlmap
/ = home
/files = files
filter-with = log

[app:files]
use = egg:paster#static
document_root = %(here)s/public

[composite:home]
use = egg:paster#cascade
app1 = files
app2 = config:` + filepath.Join(dir, "app.ini") + `#files

[filter:log]
use = egg:paster#translogger
output = %(here)s/access.log
format = %%>s %%U
`
	if err := os.WriteFile(filepath.Join(dir, "development.ini"), []byte(ini), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "app.ini"), []byte("[app:files]\nuse = egg:paster#static\ndocument_root = public\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	h, err := entrypoints.LoadApp("config:development.ini", dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	base := serveHTTP(t, h)
	for _, target := range []string{"/files/", "/", "/index.html"} {
		status, body, _ := do(t, nil, newRequest(t, "GET", base+target, nil))
		if status != 200 || body != "<h1>static</h1>" {
			t.Errorf("%s: %d %q", target, status, body)
		}
	}
	if status, _, hdr := do(t, nil, newRequest(t, "GET", base+"/files", nil)); status != 301 || hdr.Get("Location") != "/files/" {
		t.Errorf("/files: %d Location %q", status, hdr.Get("Location"))
	}
	b, _ := os.ReadFile(filepath.Join(dir, "access.log"))
	if !strings.Contains(string(b), "200 /files/\n") || !strings.Contains(string(b), "301 /files\n") {
		t.Errorf("access log %q", b)
	}
}
