package builtin

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
	h, err := urlmapFactory(&fakeLoader{apps: map[string]http.Handler{"static": app, "top": top}}, nil,
		localOf("/static", "static", "/", "top"))
	if err != nil {
		t.Fatal(err)
	}
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
