package entrypoints

import (
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// testResolver serves one dist, "Remote", as if from plugin binaries, and
// records what the loader asked for.
type testResolver struct {
	dist *Dist
	mu   sync.Mutex
	asks []string
	from []Origin
}

func (r *testResolver) Egg(name string, from Origin) (*Dist, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.asks, r.from = append(r.asks, "egg "+name), append(r.from, from)
	switch name {
	case "Remote":
		return r.dist, nil
	case "Broken":
		return nil, fmt.Errorf("%w: binary bin/paster-plugin-Broken", errBrokenPlugin)
	}
	return nil, fmt.Errorf("%w: no plugin %q in %s", ErrNoDist, name, from.Plugins["path"])
}

// DistNames lists the dists testResolver would find, as a plugin path
// lists its binaries.
func (r *testResolver) DistNames(Origin) []string { return []string{"Broken", "Remote"} }

func (r *testResolver) Binary(path string, from Origin) (*Dist, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.asks, r.from = append(r.asks, "binary "+path), append(r.from, from)
	return r.dist, nil
}

// errBrokenPlugin is what testResolver fails with for dist "Broken": a
// binary that exists but cannot be started.
var errBrokenPlugin = errors.New("plugin checksum mismatch")

func newResolver() *testResolver {
	app := func(global map[string]string, local Local) (http.Handler, error) { return &tracer{tag: "remote"}, nil }
	return &testResolver{dist: &Dist{Name: "Remote", Apps: map[string]AppFactory{"main": app, "admin": app}}}
}

// TestResolver: egg: names missing from the registry, plugin: URIs and
// require go to the Resolver, with the referring file and [plugins].
func TestResolver(t *testing.T) {
	t.Parallel()
	dir := testdata(t)
	plugins := map[string]string{"path": filepath.Join(dir, "bin")}
	cases := []struct {
		uri, ask, entryPoint string
	}{
		{"config:plugins.ini", "binary " + filepath.Join(dir, "bin", "blog"), "plugin:" + filepath.Join(dir, "bin", "blog") + "#admin"},
		{"config:plugins.ini#remote", "egg Remote", "egg:Remote#main"},
		{"config:plugins.ini#require_remote", "egg Remote", "egg:t#main"},
	}
	for _, tc := range cases {
		t.Run(tc.uri, func(t *testing.T) {
			t.Parallel()
			s, _, _ := newSession()
			r := newResolver()
			s.Resolver = r
			if _, err := s.LoadApp(tc.uri, dir, nil); err != nil {
				t.Fatal(err)
			}
			if len(r.asks) != 1 || r.asks[0] != tc.ask {
				t.Fatalf("asked %v, want %q", r.asks, tc.ask)
			}
			from := r.from[0]
			if from.File != filepath.Join(dir, "plugins.ini") || from.Line == 0 || from.Plugins["path"] != plugins["path"] {
				t.Errorf("origin %+v", from)
			}
			if ep := s.Root[0].EntryPoint; ep != tc.entryPoint {
				t.Errorf("entry point %q, want %q", ep, tc.entryPoint)
			}
		})
	}
	t.Run("the resolver's reason is part of the error", func(t *testing.T) {
		t.Parallel()
		s, _, _ := newSession()
		s.Resolver = newResolver()
		_, err := s.LoadApp("config:errors.ini#nodist", dir, nil)
		if !errors.Is(err, ErrNoDist) {
			t.Fatalf("error %v", err)
		}
		wantContains(t, "error", err.Error(), `no plugin "Blgo"`, `did you mean "Blog"?`)
	})
	t.Run("a binary that fails to start keeps its error kind", func(t *testing.T) {
		t.Parallel()
		s, _, _ := newSession()
		s.Resolver = newResolver()
		_, err := s.LoadApp("egg:Broken", dir, nil)
		if !errors.Is(err, errBrokenPlugin) || errors.Is(err, ErrNoDist) {
			t.Fatalf("error %v: want the resolver's own kind, not ErrNoDist", err)
		}
		wantContains(t, "error", err.Error(), `dist "Broken"`, "bin/paster-plugin-Broken")
	})
}

// TestDistSuggestions (issue 9.7): a misspelt egg: name gets a did-you-mean
// from the compiled-in dists and from those the resolver lists (plugin
// binaries), and the resolver's reason once.
func TestDistSuggestions(t *testing.T) {
	t.Parallel()
	cases := []struct {
		uri      string
		want     []string
		wantNot  []string
		resolver bool
	}{
		{"egg:Remot", []string{`dist "Remot" not found`, `no plugin "Remot"`, `did you mean "Remote"?`}, nil, true},
		{"egg:Blgo", []string{`did you mean "Blog"?`}, nil, true},
		{"egg:remote", []string{`did you mean "Remote"?`}, nil, true},
		{"egg:zzzzzz", []string{`dist "zzzzzz" not found`}, []string{"did you mean"}, true},
		{"egg:Remot", []string{`dist "Remot" not found (compiled in: Blog, Other-Dist, t)`}, []string{"did you mean", "Remote"}, false},
	}
	for _, tc := range cases {
		t.Run(tc.uri, func(t *testing.T) {
			t.Parallel()
			s, _, _ := newSession()
			if tc.resolver {
				s.Resolver = newResolver()
			}
			_, err := s.LoadApp(tc.uri, testdata(t), nil)
			if !errors.Is(err, ErrNoDist) {
				t.Fatalf("error %v, want ErrNoDist", err)
			}
			wantContains(t, "error", err.Error(), tc.want...)
			wantNotContains(t, "error", err.Error(), tc.wantNot...)
			if n := strings.Count(err.Error(), "not found"); n != 1 {
				t.Errorf("error says \"not found\" %d times: %s", n, err)
			}
		})
	}
}

// TestPackageFunctions: the package-level functions use the Default
// registry and need a scheme.
func TestPackageFunctions(t *testing.T) {
	t.Parallel()
	dir := testdata(t)
	for name, load := range map[string]func() error{
		"LoadApp":    func() error { _, err := LoadApp("egg:entrypoints-test-nosuch", dir, nil); return err },
		"LoadFilter": func() error { _, err := LoadFilter("egg:entrypoints-test-nosuch", dir, nil); return err },
		"LoadServer": func() error { _, err := LoadServer("egg:entrypoints-test-nosuch", dir, nil); return err },
		"AppConfig":  func() error { _, err := AppConfig("egg:entrypoints-test-nosuch", dir, nil); return err },
	} {
		if err := load(); !errors.Is(err, ErrNoDist) {
			t.Errorf("%s: error %v, want ErrNoDist", name, err)
		}
	}
}
