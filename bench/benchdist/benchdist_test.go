package benchdist

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/paster-dev/paster/entrypoints"
)

// TestRoutes checks each route's answer over a real socket: the benchmarks
// count only 2xx answers, so a broken route would read as a fast one.
func TestRoutes(t *testing.T) {
	app, err := Dist.Apps["main"](nil, entrypoints.NewLocal())
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(app)
	defer srv.Close()

	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, string(b)
	}
	if code, body := get("/hello"); code != 200 || body != "Hello, world!\n" {
		t.Errorf("/hello: %d %q", code, body)
	}
	if code, body := get("/cpu"); code != 200 || !strings.HasSuffix(body, "\n") {
		t.Errorf("/cpu: %d %q", code, body)
	}
	if code, body := get("/source?bytes=200000"); code != 200 || len(body) != 200000 {
		t.Errorf("/source?bytes=200000: %d, %d bytes", code, len(body))
	}
	if code, _ := get("/source?bytes=-1"); code != 400 {
		t.Errorf("/source?bytes=-1: %d, want 400", code)
	}
	resp, err := http.Post(srv.URL+"/sink", "application/octet-stream", bytes.NewReader(make([]byte, 3<<20+5)))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "3145733\n" {
		t.Errorf("/sink of 3145733 bytes: %d %q", resp.StatusCode, b)
	}
}
