package builtin

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// writeFiles writes files (name: contents) under root, making directories.
func writeFiles(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for name, body := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// staticTree makes DIR/root with files, and DIR/secret.txt outside it.
func staticTree(t *testing.T) (dir, root string) {
	t.Helper()
	dir = t.TempDir()
	root = filepath.Join(dir, "root")
	files := map[string]string{
		"index.html":     "<h1>home</h1>",
		"sub/index.html": "<h1>sub</h1>",
		"sub/file.txt":   "file contents",
		"nodir/x.txt":    "x",
		"../secret.txt":  "SECRET",
	}
	writeFiles(t, root, files)
	if err := os.Symlink(filepath.Join(dir, "secret.txt"), filepath.Join(root, "escape")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("sub/file.txt", filepath.Join(root, "inside")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(dir, filepath.Join(root, "updir")); err != nil {
		t.Fatal(err)
	}
	return dir, root
}

func TestStatic(t *testing.T) {
	t.Parallel()
	dir, _ := staticTree(t)
	// Relative document_root, resolved against global "here"; mounted at
	// /static by urlmap.
	app, err := staticFactory(map[string]string{"here": dir}, localOf("document_root", "root", "cache_max_age", "60"))
	if err != nil {
		t.Fatal(err)
	}
	top, err := staticFactory(map[string]string{"here": dir}, localOf("document_root", "root"))
	if err != nil {
		t.Fatal(err)
	}
	h := mounted(t, map[string]http.Handler{"/static": app, "/": top})
	srv := start(t, h)
	tests := []struct {
		method, target string
		status         int
		body, location string
	}{
		{"GET", "/static/sub/file.txt", 200, "file contents", ""},
		{"GET", "/static", 301, "", "/static/"},
		{"GET", "/static?a=1", 301, "", "/static/?a=1"},
		{"GET", "/static/", 200, "<h1>home</h1>", ""},
		{"GET", "/static/sub", 301, "", "/static/sub/"},
		{"GET", "/static/sub/", 200, "<h1>sub</h1>", ""},
		{"GET", "/static/sub/file.txt/", 404, "", ""},
		{"GET", "/static/nodir/", 404, "", ""},
		{"GET", "/static/missing", 404, "", ""},
		{"GET", "/static/inside", 200, "file contents", ""},
		{"GET", "/static/escape", 404, "", ""},
		{"GET", "/static/updir/secret.txt", 404, "", ""},
		{"GET", "/static/../secret.txt", 404, "", ""},
		{"GET", "/static/%2e%2e/secret.txt", 404, "", ""},
		{"GET", "/static/..%2fsecret.txt", 404, "", ""},
		{"GET", "/static/sub/..%2f..%2f..%2fsecret.txt", 404, "", ""},
		{"GET", "/static/a%00b", 400, "", ""},
		// Names the file system refuses as too long are not found, not
		// a 500 with a warning logged for every such request.
		{"GET", "/static/" + strings.Repeat("n", 300), 404, "", ""},
		{"GET", "/static/sub/" + strings.Repeat("n", 300) + "/x.txt", 404, "", ""},
		{"GET", "/static/" + strings.Repeat("sub/../", 700) + strings.Repeat("d/", 2100), 404, "", ""},
		{"GET", "/static/" + strings.Repeat("nodir/", 800) + "x.txt", 404, "", ""},
		{"POST", "/static/sub/file.txt", 405, "", ""},
		{"HEAD", "/static/sub/file.txt", 200, "", ""},
		{"GET", "/", 200, "<h1>home</h1>", ""},
		{"GET", "/sub", 301, "", "/sub/"},
	}
	for _, tt := range tests {
		req := newRequest(t, tt.method, srv.URL, nil)
		req.URL.Opaque = tt.target // sent exactly as written
		if i := strings.IndexByte(tt.target, '?'); i >= 0 {
			req.URL.Opaque, req.URL.RawQuery = tt.target[:i], tt.target[i+1:]
		}
		status, body, hdr := do(t, nil, req)
		if status != tt.status {
			t.Errorf("%s %s: status %d, want %d (%q)", tt.method, tt.target, status, tt.status, body)
			continue
		}
		if strings.Contains(body, "SECRET") {
			t.Errorf("%s %s: escaped the root", tt.method, tt.target)
		}
		if tt.body != "" && body != tt.body {
			t.Errorf("%s %s: body %q, want %q", tt.method, tt.target, body, tt.body)
		}
		if got := hdr.Get("Location"); got != tt.location {
			t.Errorf("%s %s: Location %q, want %q", tt.method, tt.target, got, tt.location)
		}
		if status == 200 && strings.HasPrefix(tt.target, "/static/") && hdr.Get("Cache-Control") != "max-age=60" {
			t.Errorf("%s %s: Cache-Control %q", tt.method, tt.target, hdr.Get("Cache-Control"))
		}
	}

	req := newRequest(t, "GET", srv.URL+"/static/sub/file.txt", nil)
	req.Header.Set("Range", "bytes=0-3")
	if status, body, _ := do(t, nil, req); status != 206 || body != "file" {
		t.Errorf("range request: %d %q", status, body)
	}
}

func TestStaticErrors(t *testing.T) {
	t.Parallel()
	_, root := staticTree(t)
	tests := []struct {
		local    []string
		key, err string
	}{
		{[]string{}, "document_root", "required"},
		{[]string{"document_root", filepath.Join(root, "nope")}, "document_root", "no such file"},
		{[]string{"document_root", filepath.Join(root, "index.html")}, "document_root", "not a directory"},
		{[]string{"document_root", root, "cache_max_age", "soon"}, "cache_max_age", "bad integer"},
	}
	for _, tt := range tests {
		_, err := staticFactory(nil, localOf(tt.local...))
		if len(tt.local) == 0 { // a missing key has no location
			if err == nil || !strings.Contains(err.Error(), "document_root: required") {
				t.Errorf("no document_root: %v", err)
			}
			continue
		}
		wantErr(t, err, tt.key, tt.err)
	}
}

// TestStaticHidden: dotfiles and anything under a dot-directory are 404
// unless serve_hidden = true (issue 8.12); /.well-known/ (RFC 8615) is
// served either way. Requests are written by hand so that encoded and
// doubled forms reach the server as sent.
func TestStaticHidden(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	files := map[string]string{
		".env":                 "SECRET=1",
		".git/config":          "[core] SECRET",
		".git/index.html":      "SECRET index",
		"sub/.htpasswd":        "SECRET:x",
		"sub/.cache/x.txt":     "SECRET cache",
		"sub/ok.txt":           "visible",
		".well-known/acme.txt": "challenge",
		"a.b/.c":               "SECRET c",
		"name.with.dots.txt":   "dots",
	}
	writeFiles(t, root, files)
	hidden := []string{
		"/.env", "/.env?x=1", "/%2eenv", "/.git/config", "/.git/", "/.git", "/.git/index.html",
		"//.git/config", "/sub/../.env", "/sub/.htpasswd", "/sub/.cache/x.txt", "/sub/.cache/",
		"/a.b/.c", "/./.env", "/x/..%2f.env",
	}
	visible := map[string]string{"/sub/ok.txt": "visible", "/.well-known/acme.txt": "challenge", "/name.with.dots.txt": "dots"}
	for _, serveHidden := range []bool{false, true} {
		local := []string{"document_root", root}
		if serveHidden {
			local = append(local, "serve_hidden", "true")
		}
		h, err := staticFactory(nil, localOf(local...))
		if err != nil {
			t.Fatal(err)
		}
		addr := start(t, h).Listener.Addr().String()
		for _, target := range hidden {
			resp, body := rawGet(t, addr, target)
			if !serveHidden && (resp.StatusCode != http.StatusNotFound || strings.Contains(body, "SECRET")) {
				t.Errorf("GET %s: %d %q, want 404", target, resp.StatusCode, body)
			}
		}
		for target, want := range visible {
			if resp, body := rawGet(t, addr, target); resp.StatusCode != 200 || body != want {
				t.Errorf("serve_hidden=%v: GET %s: %d %q, want 200 %q", serveHidden, target, resp.StatusCode, body, want)
			}
		}
		if resp, body := rawGet(t, addr, "/.env"); serveHidden && (resp.StatusCode != 200 || body != "SECRET=1") {
			t.Errorf("serve_hidden=true: GET /.env: %d %q", resp.StatusCode, body)
		}
	}
	_, err := staticFactory(nil, localOf("document_root", root, "serve_hidden", "perhaps"))
	wantErr(t, err, "serve_hidden", "perhaps")
}

// TestStaticConditional: files carry a strong ETag and Last-Modified, and
// conditional requests use them (issue 13.7): If-None-Match and
// If-Modified-Since get 304 without a body, If-Range with the current
// validator gets the range (206) and with a stale one the whole file (200).
// Before, no ETag was sent, so If-None-Match and an If-Range naming an ETag
// never matched.
func TestStaticConditional(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	writeFiles(t, root, map[string]string{"a.txt": "0123456789"})
	h, err := staticFactory(nil, localOf("document_root", root))
	if err != nil {
		t.Fatal(err)
	}
	url := start(t, h).URL + "/a.txt"
	status, body, hdr := do(t, nil, newRequest(t, "GET", url, nil))
	etag, lastMod := hdr.Get("ETag"), hdr.Get("Last-Modified")
	if status != 200 || body != "0123456789" || !strings.HasPrefix(etag, `"`) || lastMod == "" {
		t.Fatalf("GET: %d %q, ETag %q, Last-Modified %q", status, body, etag, lastMod)
	}
	tests := []struct {
		name    string
		headers []string
		status  int
		body    string
	}{
		{"If-None-Match current", []string{"If-None-Match", etag}, 304, ""},
		{"If-None-Match in a list", []string{"If-None-Match", `"other", ` + etag}, 304, ""},
		{"If-None-Match weak form", []string{"If-None-Match", "W/" + etag}, 304, ""},
		{"If-None-Match star", []string{"If-None-Match", "*"}, 304, ""},
		{"If-None-Match stale", []string{"If-None-Match", `"stale"`}, 200, "0123456789"},
		{"If-Modified-Since current", []string{"If-Modified-Since", lastMod}, 304, ""},
		{"If-Modified-Since old", []string{"If-Modified-Since", "Mon, 02 Jan 2006 15:04:05 GMT"}, 200, "0123456789"},
		{"stale ETag beats a current date", []string{"If-None-Match", `"stale"`, "If-Modified-Since", lastMod}, 200, "0123456789"},
		{"Range", []string{"Range", "bytes=2-4"}, 206, "234"},
		{"If-Range current ETag", []string{"Range", "bytes=2-4", "If-Range", etag}, 206, "234"},
		{"If-Range stale ETag", []string{"Range", "bytes=2-4", "If-Range", `"stale"`}, 200, "0123456789"},
		{"If-Range current date", []string{"Range", "bytes=2-4", "If-Range", lastMod}, 206, "234"},
		{"If-Range old date", []string{"Range", "bytes=2-4", "If-Range", "Mon, 02 Jan 2006 15:04:05 GMT"}, 200, "0123456789"},
		{"If-Match stale", []string{"If-Match", `"stale"`}, 412, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			req := newRequest(t, "GET", url, nil)
			for i := 0; i+1 < len(tt.headers); i += 2 {
				req.Header.Set(tt.headers[i], tt.headers[i+1])
			}
			status, body, hdr := do(t, nil, req)
			if status != tt.status || (tt.body != "" && body != tt.body) {
				t.Fatalf("%d %q, want %d %q", status, body, tt.status, tt.body)
			}
			if status == 304 && (body != "" || hdr.Get("ETag") != etag) {
				t.Errorf("304 with body %q, ETag %q", body, hdr.Get("ETag"))
			}
		})
	}
}

// TestStaticPrecompressed: a file's .br and .gz siblings are served to the
// clients that accept the coding (issue 13.7), with Content-Encoding, the
// original's Content-Type, an ETag of their own and Vary: Accept-Encoding;
// a client that does not accept it gets the original. Ranges count
// compressed bytes. Before, the original was always served.
func TestStaticPrecompressed(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	writeFiles(t, root, map[string]string{
		"app.js":            "ORIGINAL js",
		"app.js.gz":         "GZ bytes",
		"app.js.br":         "BR bytes",
		"noext":             "<html><body>plain</body></html>",
		"noext.gz":          "GZ noext",
		"only.css":          "ORIGINAL css",
		"only.css.gz":       "GZ css",
		"orphan.txt.gz":     "GZ orphan",
		"plain.txt":         "ORIGINAL plain",
		"dir.txt":           "ORIGINAL dir",
		"dir.txt.gz/x":      "a directory, not a sibling",
		".hidden.js":        "SECRET",
		".hidden.js.gz":     "SECRET gz",
		"sub/index.html":    "ORIGINAL index",
		"sub/index.html.br": "BR index",
	})
	tests := []struct {
		name, precompressed, path, accept string
		status                            int
		body, encoding, ctype             string
		vary                              bool
	}{
		{"br preferred", "", "/app.js", "gzip, br", 200, "BR bytes", "br", "text/javascript; charset=utf-8", true},
		{"gzip only", "", "/app.js", "gzip", 200, "GZ bytes", "gzip", "text/javascript; charset=utf-8", true},
		{"x-gzip", "", "/app.js", "x-gzip", 200, "GZ bytes", "gzip", "text/javascript; charset=utf-8", true},
		{"q decides", "", "/app.js", "br;q=0.5, gzip;q=0.9", 200, "GZ bytes", "gzip", "text/javascript; charset=utf-8", true},
		{"star", "", "/app.js", "*", 200, "BR bytes", "br", "text/javascript; charset=utf-8", true},
		{"br refused by q=0", "", "/app.js", "br;q=0, gzip", 200, "GZ bytes", "gzip", "text/javascript; charset=utf-8", true},
		{"all refused", "", "/app.js", "br;q=0, gzip;q=0", 200, "ORIGINAL js", "", "text/javascript; charset=utf-8", true},
		{"no Accept-Encoding", "", "/app.js", "", 200, "ORIGINAL js", "", "text/javascript; charset=utf-8", true},
		{"identity only", "", "/app.js", "identity", 200, "ORIGINAL js", "", "text/javascript; charset=utf-8", true},
		{"sniffed type of the original", "", "/noext", "gzip", 200, "GZ noext", "gzip", "text/html; charset=utf-8", true},
		{"only a gz sibling, br asked", "", "/only.css", "br", 200, "ORIGINAL css", "", "text/css; charset=utf-8", true},
		{"no sibling: no Vary", "", "/plain.txt", "gzip, br", 200, "ORIGINAL plain", "", "text/plain; charset=utf-8", false},
		{"a directory is no sibling", "", "/dir.txt", "gzip", 200, "ORIGINAL dir", "", "text/plain; charset=utf-8", false},
		{"orphan sibling not served", "", "/orphan.txt", "gzip", 404, "", "", "", false},
		{"sibling by its own name", "", "/app.js.gz", "", 200, "GZ bytes", "", "application/gzip", false},
		{"hidden stays hidden", "", "/.hidden.js", "gzip", 404, "", "", "", false},
		{"index sibling", "", "/sub/", "br", 200, "BR index", "br", "text/html; charset=utf-8", true},
		{"precompressed = gzip", "gzip", "/app.js", "br, gzip", 200, "GZ bytes", "gzip", "text/javascript; charset=utf-8", true},
		{"precompressed = gzip, br preference", "gzip br", "/app.js", "br, gzip", 200, "GZ bytes", "gzip", "text/javascript; charset=utf-8", true},
		{"precompressed = none", "none", "/app.js", "br, gzip", 200, "ORIGINAL js", "", "text/javascript; charset=utf-8", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			local := []string{"document_root", root}
			if tt.precompressed != "" {
				local = append(local, "precompressed", tt.precompressed)
			}
			h, err := staticFactory(nil, localOf(local...))
			if err != nil {
				t.Fatal(err)
			}
			req := newRequest(t, "GET", start(t, h).URL+tt.path, nil)
			if tt.accept != "" {
				req.Header.Set("Accept-Encoding", tt.accept)
			}
			status, body, hdr := do(t, nil, req)
			if status != tt.status || (tt.body != "" && body != tt.body) || strings.Contains(body, "SECRET") {
				t.Fatalf("%d %q, want %d %q", status, body, tt.status, tt.body)
			}
			if status != 200 {
				return
			}
			if got := hdr.Get("Content-Encoding"); got != tt.encoding {
				t.Errorf("Content-Encoding %q, want %q", got, tt.encoding)
			}
			if got := hdr.Get("Content-Type"); got != tt.ctype {
				t.Errorf("Content-Type %q, want %q", got, tt.ctype)
			}
			if got := varyHas(hdr, "Accept-Encoding"); got != tt.vary {
				t.Errorf("Vary %q, want Accept-Encoding: %v", hdr.Values("Vary"), tt.vary)
			}
			if tt.encoding != "" && !strings.HasSuffix(hdr.Get("ETag"), "-"+tt.encoding+`"`) {
				t.Errorf("ETag %q is not the %s representation's", hdr.Get("ETag"), tt.encoding)
			}
		})
	}

	// Each representation has its own validator: a client holding the
	// gzip one gets 304 for gzip, and the whole original if it now
	// asks without gzip; a range counts compressed bytes, and If-Range
	// with the original's ETag does not apply to the compressed one.
	h, err := staticFactory(nil, localOf("document_root", root))
	if err != nil {
		t.Fatal(err)
	}
	url := start(t, h).URL + "/app.js"
	get := func(headers ...string) (int, string, http.Header) {
		req := newRequest(t, "GET", url, nil)
		for i := 0; i+1 < len(headers); i += 2 {
			req.Header.Set(headers[i], headers[i+1])
		}
		return do(t, nil, req)
	}
	_, _, gz := get("Accept-Encoding", "gzip")
	_, _, orig := get()
	gzTag, origTag := gz.Get("ETag"), orig.Get("ETag")
	if gzTag == origTag {
		t.Fatalf("gzip and original share the ETag %q", gzTag)
	}
	if status, _, _ := get("Accept-Encoding", "gzip", "If-None-Match", gzTag); status != 304 {
		t.Errorf("gzip with its ETag: %d, want 304", status)
	}
	if status, body, _ := get("If-None-Match", gzTag); status != 200 || body != "ORIGINAL js" {
		t.Errorf("identity with the gzip ETag: %d %q, want the original", status, body)
	}
	if status, body, hdr := get("Accept-Encoding", "gzip", "Range", "bytes=3-7"); status != 206 || body != "bytes" || hdr.Get("Content-Encoding") != "gzip" {
		t.Errorf("range of gzip: %d %q %q", status, body, hdr.Get("Content-Encoding"))
	}
	if status, body, _ := get("Accept-Encoding", "gzip", "Range", "bytes=3-7", "If-Range", origTag); status != 200 || body != "GZ bytes" {
		t.Errorf("If-Range with the original's ETag on gzip: %d %q, want the whole gzip file", status, body)
	}

	_, err = staticFactory(nil, localOf("document_root", root, "precompressed", "zstd"))
	wantErr(t, err, "precompressed", "zstd")
	_, err = staticFactory(nil, localOf("document_root", root, "precompressed", "gzip gzip"))
	wantErr(t, err, "precompressed", "twice")
}

// TestStaticManyRanges: a Range header listing many small ranges made
// http.ServeContent write one multipart part per range, a seek and a read
// each: about a CPU-second and 11 MB out for one 900 KB request. Past
// maxRanges ranges the whole file is sent instead (200, as Apache's
// MaxRanges does), which costs a sendfile; up to it, ranges are served.
func TestStaticManyRanges(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	content := strings.Repeat("0123456789abcdef", 256)
	writeFiles(t, root, map[string]string{"a.txt": content})
	h, err := staticFactory(nil, localOf("document_root", root))
	if err != nil {
		t.Fatal(err)
	}
	url := start(t, h).URL + "/a.txt"
	ranges := func(n int) string {
		var b strings.Builder
		b.WriteString("bytes=")
		for i := range n {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, "%d-%d", i*2, i*2)
		}
		return b.String()
	}
	tests := []struct {
		n      int
		status int
	}{
		{2, 206},
		{maxRanges, 206},
		{maxRanges + 1, 200},
		{10000, 200},
	}
	for _, tt := range tests {
		t.Run(strconv.Itoa(tt.n), func(t *testing.T) {
			t.Parallel()
			req := newRequest(t, "GET", url, nil)
			req.Header.Set("Range", ranges(tt.n))
			status, body, hdr := do(t, nil, req)
			if status != tt.status {
				t.Fatalf("%d ranges: status %d, want %d", tt.n, status, tt.status)
			}
			if status == 200 && body != content {
				t.Errorf("%d ranges: body of %d bytes, want the whole file", tt.n, len(body))
			}
			if ct := hdr.Get("Content-Type"); status == 206 && !strings.HasPrefix(ct, "multipart/byteranges") {
				t.Errorf("%d ranges: Content-Type %q", tt.n, ct)
			}
		})
	}
}

// TestStaticLongPath: a request path may be as long as max_header_bytes
// (1 MiB). os.Root splits a path into its components before walking them,
// and the hidden-file check split it too: a path of 500,000 one-letter
// directories cost 64 MB of allocation in static for each request, 60
// times what it took to send. A name longer than a path can be (PATH_MAX,
// 4096 bytes) is now 404 without going further. Allocation is measured
// against a plain app given the same request, not in parallel, so that
// other tests' allocations do not count.
func TestStaticLongPath(t *testing.T) {
	root := t.TempDir()
	writeFiles(t, root, map[string]string{"a/a/x.txt": "x"})
	h, err := staticFactory(nil, localOf("document_root", root))
	if err != nil {
		t.Fatal(err)
	}
	plain := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) })
	get := func(h http.Handler, path string) (bytes uint64, status int) {
		addr := start(t, h).Listener.Addr().String()
		bytes = allocated(func() {
			resp, _ := rawRequest(t, addr, "GET "+path+" HTTP/1.1\r\nHost: x\r\nConnection: close")
			status = resp.StatusCode
		})
		return bytes, status
	}
	long := "/" + strings.Repeat("a/", 500<<10) + "x.txt"
	base, _ := get(plain, long)
	got, status := get(h, long)
	if status != http.StatusNotFound {
		t.Errorf("status %d, want 404", status)
	}
	if extra := int64(got) - int64(base); extra > 8<<20 {
		t.Errorf("a %d-byte path cost static %d bytes of allocation more than a plain app", len(long), extra)
	}
	if _, status := get(h, "/a/a/x.txt"); status != 200 {
		t.Errorf("short path: status %d", status)
	}
}

// TestStaticNotRegular: a named pipe (FIFO) under document_root blocked
// the request opening it until some process wrote to the pipe: a client
// asking for it again and again held a goroutine and a descriptor each,
// for good. Only regular files (and directories, for their index.html)
// are served; anything else is 404, as nginx does, without waiting.
func TestStaticNotRegular(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	if err := syscall.Mkfifo(filepath.Join(root, "pipe"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(root, "dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(root, "dir", "index.html"), 0o644); err != nil {
		t.Fatal(err)
	}
	h, err := staticFactory(nil, localOf("document_root", root))
	if err != nil {
		t.Fatal(err)
	}
	url := start(t, h).URL
	// Should a handler wait in open, a writer appearing releases it, so
	// that the server can close at the end (cleanups run last first).
	t.Cleanup(func() {
		for _, p := range []string{"pipe", "dir/index.html"} {
			if f, err := os.OpenFile(filepath.Join(root, p), os.O_RDWR, 0); err == nil {
				f.Close()
			}
		}
	})
	c := &http.Client{Timeout: 3 * time.Second}
	for _, path := range []string{"/pipe", "/dir/"} {
		resp, err := c.Get(url + path)
		if err != nil {
			t.Errorf("%s: %v", path, err)
			continue
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s: status %d, want 404", path, resp.StatusCode)
		}
	}
}
