package builtin

import (
	"bufio"
	"compress/gzip"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

func TestGzip(t *testing.T) {
	t.Parallel()
	html := strings.Repeat("<p>hello gzip</p>", 50)
	app := func(ct, ce, etag string, status int, body string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if ct != "" {
				w.Header().Set("Content-Type", ct)
			}
			if ce != "" {
				w.Header().Set("Content-Encoding", ce)
			}
			if etag != "" {
				w.Header().Set("ETag", etag)
			}
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			w.WriteHeader(status)
			io.WriteString(w, body)
		})
	}
	tests := []struct {
		name       string
		app        http.Handler
		accept     string
		compressed bool
		vary       bool
		ct, etag   string
	}{
		{"html", app("text/html; charset=utf-8", "", "", 200, html), "gzip, deflate", true, true, "text/html; charset=utf-8", ""},
		{"json", app("application/json", "", `"v1"`, 200, html), "br;q=1, gzip;q=0.5", true, true, "application/json", `W/"v1"`},
		{"sniffed", app("", "", "", 200, html), "gzip", true, true, "text/html; charset=utf-8", ""},
		{"client does not accept", app("text/html", "", "", 200, html), "", false, true, "text/html", ""},
		{"gzip q=0", app("text/html", "", "", 200, html), "gzip;q=0, *", false, true, "text/html", ""},
		{"star", app("text/plain", "", "", 200, html), "*", true, true, "text/plain", ""},
		{"image", app("image/png", "", "", 200, html), "gzip", false, false, "image/png", ""},
		{"zip", app("application/zip", "", "", 200, html), "gzip", false, false, "application/zip", ""},
		{"already encoded", app("text/html", "br", "", 200, html), "gzip", false, false, "text/html", ""},
		{"404 page compressed too", app("text/html", "", "", 404, html), "gzip", true, true, "text/html", ""},
		{"no body", app("text/html", "", "", 204, ""), "gzip", false, false, "text/html", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h, err := gzipFactory(tt.app, nil, localOf("compress_level", "9"))
			if err != nil {
				t.Fatal(err)
			}
			req := newRequest(t, "GET", start(t, h).URL, nil)
			if tt.accept != "" {
				req.Header.Set("Accept-Encoding", tt.accept)
			}
			_, body, hdr := do(t, nil, req)
			if got := hdr.Get("Content-Encoding") == "gzip"; got != tt.compressed {
				t.Fatalf("compressed = %v, want %v (headers %v)", got, tt.compressed, hdr)
			}
			if tt.compressed {
				zr, err := gzip.NewReader(strings.NewReader(body))
				if err != nil {
					t.Fatal(err)
				}
				b, err := io.ReadAll(zr)
				if err != nil || string(b) != html {
					t.Fatalf("decompressed %d bytes, %v", len(b), err)
				}
				if len(body) >= len(html) {
					t.Errorf("compressed %d bytes into %d", len(html), len(body))
				}
				if hdr.Get("Content-Length") == strconv.Itoa(len(html)) {
					t.Error("Content-Length of the uncompressed body kept")
				}
			}
			if got := hdr.Get("Vary") == "Accept-Encoding"; got != tt.vary {
				t.Errorf("Vary %q, want it %v", hdr.Get("Vary"), tt.vary)
			}
			if tt.ct != "" && hdr.Get("Content-Type") != tt.ct {
				t.Errorf("Content-Type %q, want %q", hdr.Get("Content-Type"), tt.ct)
			}
			if hdr.Get("ETag") != tt.etag {
				t.Errorf("ETag %q, want %q", hdr.Get("ETag"), tt.etag)
			}
		})
	}
}

// TestGzipStreams: each Flush through the filter delivers what was written
// so far, decodable, while the app still runs.
func TestGzipStreams(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: one\n\n")
		w.(http.Flusher).Flush()
		<-release
		io.WriteString(w, "data: two\n\n")
	})
	h, err := gzipFactory(app, nil, localOf())
	if err != nil {
		t.Fatal(err)
	}
	req := newRequest(t, "GET", start(t, h).URL, nil)
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err := (&http.Transport{DisableCompression: true}).RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.Header.Get("Content-Encoding") != "gzip" {
		t.Fatal("stream not compressed")
	}
	zr, err := gzip.NewReader(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(zr)
	if line, err := br.ReadString('\n'); err != nil || line != "data: one\n" {
		t.Fatalf("first event %q, %v", line, err)
	}
	close(release)
	rest, err := io.ReadAll(br)
	if err != nil || string(rest) != "\ndata: two\n\n" {
		t.Errorf("rest %q, %v", rest, err)
	}
}

func TestGzipLevelErrors(t *testing.T) {
	t.Parallel()
	for _, v := range []string{"0", "10", "fast"} {
		_, err := gzipFactory(http.NotFoundHandler(), nil, localOf("compress_level", v))
		if err == nil || !strings.Contains(err.Error(), "[composite:main] compress_level:") {
			t.Errorf("compress_level=%s: %v", v, err)
		}
	}
}
