package builtin

import (
	"bufio"
	"compress/gzip"
	"fmt"
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

// eventStream is an app sending two server-sent events: the first at
// once, flushed, the second when the channel that wait returns (called
// once per request) is closed.
func eventStream(wait func() <-chan struct{}) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		release := wait()
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: one\n\n")
		w.(http.Flusher).Flush()
		<-release
		io.WriteString(w, "data: two\n\n")
	})
}

// TestGzipStreams: each Flush through the filter delivers what was written
// so far, decodable, while the app still runs.
func TestGzipStreams(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	h, err := gzipFactory(eventStream(func() <-chan struct{} { return release }), nil, localOf())
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

// TestAcceptEncodingLong: any client may send an Accept-Encoding as long
// as max_header_bytes (1 MiB). Reading it split it into a slice of every
// entry, and each entry's parameters into another: 15 MB of allocation for
// 1 MiB of "a," on every request through gzip, or to a static file with a
// precompressed sibling. It is read in place now; the answers are the
// same. Allocation is measured against a header of the same size under
// another name; not parallel.
func TestAcceptEncodingLong(t *testing.T) {
	text := strings.Repeat("compress me ", 100)
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, text)
	})
	gz, err := gzipFactory(app, nil, localOf())
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	writeFiles(t, root, map[string]string{"a.txt": text, "a.txt.gz": "precompressed"})
	st, err := staticFactory(nil, localOf("document_root", root))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, accept, encoding string
	}{
		{"many codings, gzip last", strings.Repeat("a,", 500<<10) + "gzip", "gzip"},
		{"many parameters", "gzip" + strings.Repeat(";a=1", 250<<10), "gzip"},
		{"many stars with bad q", strings.Repeat("*;q=x.y,", 120<<10) + "gzip;q=0", ""},
	}
	for _, h := range []struct {
		name string
		h    http.Handler
		path string
	}{{"gzip", gz, "/"}, {"static", st, "/a.txt"}} {
		url := start(t, h.h).URL + h.path
		for _, tt := range tests {
			get := func(header string) (bytes uint64, encoding string) {
				req := newRequest(t, "GET", url, nil)
				req.Header.Set(header, tt.accept)
				bytes = allocated(func() {
					_, _, hdr := do(t, nil, req)
					encoding = hdr.Get("Content-Encoding")
				})
				return bytes, encoding
			}
			base, _ := get("X-Padding")
			got, encoding := get("Accept-Encoding")
			if encoding != tt.encoding {
				t.Errorf("%s, %s: Content-Encoding %q, want %q", h.name, tt.name, encoding, tt.encoding)
			}
			if extra := int64(got) - int64(base); extra > 4<<20 {
				t.Errorf("%s, %s: a %d-byte Accept-Encoding cost %d bytes more than another header of that size", h.name, tt.name, len(tt.accept), extra)
			}
		}
	}
}

// TestGzipMaxConcurrent: a response being compressed holds a compressor,
// about 800 KB at levels 2-9, for as long as the app writes it: a slow
// reader or a stream keeps it. Past gzipMaxConcurrent such responses
// (lowered to 2 here), others are sent uncompressed (still with Vary:
// Accept-Encoding), so that clients opening many slow connections cannot
// make the filter hold memory without bound; a slot is free again when its
// response ends. Before, there was no bound.
func TestGzipMaxConcurrent(t *testing.T) {
	t.Parallel()
	releases := make(chan chan struct{}, 8)
	h, err := gzipFactory(eventStream(func() <-chan struct{} {
		release := make(chan struct{})
		releases <- release
		return release
	}), nil, localOf())
	if err != nil {
		t.Fatal(err)
	}
	if g := h.(*gzipFilter); g.max != gzipMaxConcurrent {
		t.Fatalf("max %d, want gzipMaxConcurrent", g.max)
	} else {
		g.max = 2
	}
	url := start(t, h).URL
	tr := &http.Transport{DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	open := func() (*http.Response, chan struct{}) {
		req := newRequest(t, "GET", url, nil)
		req.Header.Set("Accept-Encoding", "gzip")
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp, <-releases
	}
	finish := func(resp *http.Response, release chan struct{}) {
		close(release)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	r1, rel1 := open()
	r2, rel2 := open()
	r3, rel3 := open()
	got := fmt.Sprintf("%q", []string{r1.Header.Get("Content-Encoding"), r2.Header.Get("Content-Encoding"), r3.Header.Get("Content-Encoding"), r3.Header.Get("Vary")})
	if want := `["gzip" "gzip" "" "Accept-Encoding"]`; got != want {
		t.Errorf("three streams at once with a bound of 2: Content-Encoding, and Vary of the third, %s, want %s", got, want)
	}
	finish(r1, rel1)
	finish(r3, rel3)
	r4, rel4 := open()
	if ce := r4.Header.Get("Content-Encoding"); ce != "gzip" {
		t.Errorf("after one compressed stream ended: Content-Encoding %q, want gzip", ce)
	}
	finish(r2, rel2)
	finish(r4, rel4)
}
