package entrypoints

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/paster-dev/paster/internal/testsync"
)

// recorder keeps the configuration every factory of the test dist received.
type recorder struct {
	mu    sync.Mutex
	calls []factoryCall
}

type factoryCall struct {
	entry  string // e.g. "app main", "filter trace"
	tag    string // local "tag", when set
	global map[string]string
	local  Local
}

func (r *recorder) record(entry string, global map[string]string, local Local) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, factoryCall{entry: entry, tag: local.Get("tag"), global: copyMap(global), local: local})
}

// find returns the only call with the given tag.
func (r *recorder) find(t *testing.T, tag string) factoryCall {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	var found []factoryCall
	for _, c := range r.calls {
		if c.tag == tag {
			found = append(found, c)
		}
	}
	if len(found) != 1 {
		t.Fatalf("want one factory call with tag %q, got %d (calls: %v)", tag, len(found), r.calls)
	}
	return found[0]
}

// tracer is the handler of test apps: it answers with the tags of the
// filters the request went through, outermost first, then its own tag.
type tracer struct{ tag string }

func (a *tracer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	fmt.Fprint(w, strings.Join(append(r.Header.Values("X-Trace"), a.tag), ">"))
}

// startupApp is an application that declares background coroutines.
type startupApp struct{ tracer }

func (*startupApp) Startup() map[string]Coroutine {
	run := func(ctx context.Context) error { <-ctx.Done(); return nil }
	return map[string]Coroutine{"b": run, "a": run}
}

func tagOr(local Local, def string) string {
	if t := local.Get("tag"); t != "" {
		return t
	}
	return def
}

func traceFilter(tag string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Header.Add("X-Trace", tag)
		next.ServeHTTP(w, r)
	})
}

// pathMap is the test composite: every local key that starts with "/" is a
// path prefix, its value the application loaded through the Loader.
type pathMap struct {
	prefixes []string
	apps     map[string]http.Handler
}

func (m *pathMap) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	for _, p := range m.prefixes {
		if strings.HasPrefix(r.URL.Path, p) {
			m.apps[p].ServeHTTP(w, r)
			return
		}
	}
	http.NotFound(w, r)
}

// testRegistry returns a registry with the dists the testdata files use:
// "t" (recording factories of every kind), "Blog" and "Other-Dist".
func testRegistry() (*Registry, *recorder) {
	rec := &recorder{}
	app := func(name string) AppFactory {
		return func(global map[string]string, local Local) (http.Handler, error) {
			rec.record("app "+name, global, local)
			return &tracer{tag: tagOr(local, name)}, nil
		}
	}
	t := &Dist{
		Name: "t",
		Apps: map[string]AppFactory{
			"main": app("main"),
			"both": app("both"),
			"bg": func(global map[string]string, local Local) (http.Handler, error) {
				rec.record("app bg", global, local)
				return &startupApp{tracer{tag: tagOr(local, "bg")}}, nil
			},
			"fail": func(map[string]string, Local) (http.Handler, error) { return nil, errors.New("boom") },
			"panic": func(map[string]string, Local) (http.Handler, error) {
				panic("kaboom")
			},
			"nil": func(map[string]string, Local) (http.Handler, error) { return nil, nil },
			"badport": func(_ map[string]string, local Local) (http.Handler, error) {
				_, err := local.Int("port", 80)
				return nil, err
			},
			"badtoken": func(_ map[string]string, local Local) (http.Handler, error) {
				_, err := local.Int("token_ttl", 80)
				return nil, err
			},
			// leak fails with a message that quotes secrets, as a careless
			// factory might.
			"leak": func(global map[string]string, local Local) (http.Handler, error) {
				return nil, fmt.Errorf("login as %s with password %q failed (api key %s)", local.Get("user"), local.Get("Password"), global["api_key"])
			},
		},
		Composites: map[string]CompositeFactory{
			"both": func(Loader, map[string]string, Local) (http.Handler, error) { return &tracer{}, nil },
			"map": func(l Loader, global map[string]string, local Local) (http.Handler, error) {
				rec.record("composite map", global, local)
				m := &pathMap{apps: map[string]http.Handler{}}
				for _, k := range local.Keys() {
					if !strings.HasPrefix(k, "/") {
						continue
					}
					h, err := l.App(local.Get(k), nil)
					if err != nil {
						return nil, fmt.Errorf("path %s: %w", k, err)
					}
					m.prefixes = append(m.prefixes, k)
					m.apps[k] = h
				}
				sort.Slice(m.prefixes, func(i, j int) bool { return len(m.prefixes[i]) > len(m.prefixes[j]) })
				return m, nil
			},
			"first": func(l Loader, global map[string]string, local Local) (http.Handler, error) {
				rec.record("composite first", global, local)
				return l.App(local.Get("name"), nil)
			},
		},
		Filters: map[string]FilterFactory{
			"trace": func(global map[string]string, local Local) (Filter, error) {
				rec.record("filter trace", global, local)
				tag := tagOr(local, "trace")
				return func(next http.Handler) http.Handler { return traceFilter(tag, next) }, nil
			},
		},
		FilterApps: map[string]FilterAppFactory{
			"wrap": func(next http.Handler, global map[string]string, local Local) (http.Handler, error) {
				rec.record("filter-app wrap", global, local)
				return traceFilter(tagOr(local, "wrap"), next), nil
			},
			"failwrap": func(http.Handler, map[string]string, Local) (http.Handler, error) {
				return nil, errors.New("cannot wrap")
			},
		},
		Servers: map[string]ServerFactory{
			"srv": func(global map[string]string, local Local) (Server, error) {
				rec.record("server srv", global, local)
				return func(context.Context, http.Handler) error { return nil }, nil
			},
		},
		Runners: map[string]ServerRunner{
			"run": func(context.Context, http.Handler, map[string]string, Local) error { return nil },
		},
		Coroutines: map[string]CoroutineFactory{
			"tick": func(global map[string]string, local Local) (Coroutine, error) {
				rec.record("coroutine tick", global, local)
				return func(ctx context.Context) error { <-ctx.Done(); return nil }, nil
			},
		},
	}
	blog := &Dist{Name: "Blog", Apps: map[string]AppFactory{"main": app("blog"), "admin": app("admin")}}
	other := &Dist{Name: "Other-Dist", Apps: map[string]AppFactory{"main": app("other")}}
	r := &Registry{}
	for _, d := range []*Dist{t, blog, other} {
		if err := r.Add(d); err != nil {
			panic(err)
		}
	}
	return r, rec
}

// testdata is the absolute path of the testdata directory, the base of
// every load in these tests.
func testdata(t testing.TB) string {
	t.Helper()
	dir, err := filepath.Abs("testdata")
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// newSession returns a session over the test registry with its recorder and
// a log buffer.
func newSession() (*Session, *recorder, *testsync.Buffer) {
	reg, rec := testRegistry()
	logs := &testsync.Buffer{}
	s := &Session{Registry: reg, Logger: hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Warn})}
	return s, rec, logs
}

// get serves one request to h and returns the body.
func get(h http.Handler, path string) string {
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", path, nil))
	return w.Body.String()
}

func wantContains(t *testing.T, what, got string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(got, w) {
			t.Errorf("%s %q does not contain %q", what, got, w)
		}
	}
}

func wantNotContains(t *testing.T, what, got string, nots ...string) {
	t.Helper()
	for _, w := range nots {
		if strings.Contains(got, w) {
			t.Errorf("%s %q contains %q", what, got, w)
		}
	}
}

// localMap returns l as a map, for comparisons.
func localMap(l Local) map[string]string { return l.Map() }

func wantMap(t *testing.T, what string, got map[string]string, want map[string]string) {
	t.Helper()
	for k, v := range want {
		g, ok := got[k]
		switch {
		case v == absent && ok:
			t.Errorf("%s: %s = %q, want it absent", what, k, g)
		case v != absent && !ok:
			t.Errorf("%s: %s missing, want %q", what, k, v)
		case v != absent && g != v:
			t.Errorf("%s: %s = %q, want %q", what, k, g, v)
		}
	}
}

// absent in a wantMap map means "the key must not be there".
const absent = "\x00absent"
