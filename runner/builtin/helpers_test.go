package builtin

import (
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/paster-dev/paster/entrypoints"
)

// at is where test keys claim to be written.
var at = entrypoints.Location{File: "test.ini", Line: 3, Section: "composite:main"}

func localOf(pairs ...string) entrypoints.Local {
	var l entrypoints.Local
	for i := 0; i+1 < len(pairs); i += 2 {
		l = l.With(pairs[i], pairs[i+1], at)
	}
	return l
}

// fakeLoader serves apps by name and remembers the global conf it was given.
type fakeLoader struct {
	apps map[string]http.Handler

	mu      sync.Mutex
	globals []map[string]string
}

func (f *fakeLoader) App(name string, global map[string]string) (http.Handler, error) {
	f.mu.Lock()
	f.globals = append(f.globals, global)
	f.mu.Unlock()
	if h, ok := f.apps[name]; ok {
		return h, nil
	}
	return nil, fmt.Errorf("no app %q", name)
}

func (f *fakeLoader) Filter(string, map[string]string) (entrypoints.Filter, error) {
	return nil, fmt.Errorf("no filters here")
}

func (f *fakeLoader) Server(string, map[string]string) (entrypoints.Server, error) {
	return nil, fmt.Errorf("no servers here")
}

// mounted is urlmapFactory with each handler of apps mounted at its key,
// a path (the app's name too); an error fails the test.
func mounted(t *testing.T, apps map[string]http.Handler) http.Handler {
	t.Helper()
	var pairs []string
	for _, p := range slices.Sorted(maps.Keys(apps)) {
		pairs = append(pairs, p, p)
	}
	h, err := urlmapFactory(&fakeLoader{apps: apps}, nil, localOf(pairs...))
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// whereApp answers "NAME|SCRIPT_NAME|PATH|RAWPATH".
func whereApp(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s|%s|%s|%s", name, ScriptName(r), r.URL.Path, r.URL.RawPath)
	})
}

// start serves h on a real socket for the test's lifetime.
func start(t *testing.T, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// get sends a request and returns status, body and headers.
func do(t *testing.T, c *http.Client, req *http.Request) (int, string, http.Header) {
	t.Helper()
	if c == nil {
		c = &http.Client{
			Transport:     &http.Transport{DisableCompression: true},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b), resp.Header
}

func newRequest(t *testing.T, method, url string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

func wantErr(t *testing.T, err error, key, substr string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one about %s containing %q", key, substr)
	}
	for _, want := range []string{"test.ini:3 [composite:main] " + key + ":", substr} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
}

// allocated returns the bytes this process allocated while fn ran. Tests
// using it measure what a request costs the server in their own process,
// against a baseline request, and must not be parallel, so that other
// tests' allocations do not count.
func allocated(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}
