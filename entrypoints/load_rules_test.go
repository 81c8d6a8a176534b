package entrypoints

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// lineOf returns the line of the first line starting with prefix after the
// line that is header in testdata file name: tests name lines without
// counting them by hand.
func lineOf(t *testing.T, name, header, prefix string) int {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	in := header == ""
	for i, l := range strings.Split(string(data), "\n") {
		if !in {
			in = strings.TrimSpace(l) == header
			if in && prefix == "" {
				return i + 1
			}
			continue
		}
		if strings.HasPrefix(strings.TrimSpace(l), prefix) {
			return i + 1
		}
	}
	t.Fatalf("%s: no line %q after %q", name, prefix, header)
	return 0
}

// TestLoadRules covers spec §1 with the testdata files: each case loads one
// URI with recording factories and checks what the factories received,
// what the composition does with a request, and what was logged.
func TestLoadRules(t *testing.T) {
	t.Parallel()
	dir := testdata(t)
	sub := filepath.Join(dir, "sub")
	type result struct {
		s    *Session
		rec  *recorder
		logs string
		h    http.Handler
	}
	cases := []struct {
		name   string
		uri    string
		global map[string]string
		check  func(t *testing.T, r result)
	}{
		{"1.1 parsing, interpolation, shadowed DEFAULT key", "config:basic.ini", nil, func(t *testing.T, r result) {
			c := r.rec.find(t, "main")
			wantMap(t, "local", localMap(c.local), map[string]string{
				"url": "http://example.org:8080/", "pct": "100%", "here_is": dir,
				"file_is": filepath.Join(dir, "basic.ini"), "Mixed.Case Key": "kept", "colon": "value",
				"multi": "first\nsecond\n\nthird", "inline": "v ; not a comment # nor this",
				"quoted": `"q"`, "empty": "", "http": "//host/ = app", "debug": absent, "use": absent,
			})
			wantMap(t, "global", c.global, map[string]string{"debug": "true", "proto": "http", "port": "8080",
				"here": dir, "__file__": filepath.Join(dir, "basic.ini")})
			wantContains(t, "log", r.logs, "basic.ini:13 [app:main] debug", `"set debug = ...`)
			want := []string{"tag", "url", "host", "pct", "here_is", "file_is", "Mixed.Case Key", "colon", "multi", "inline", "quoted", "empty", "http"}
			if got := c.local.Keys(); !slices.Equal(got, want) {
				t.Errorf("local keys %v, want file order %v", got, want)
			}
		}},
		{"1.1 local conf keeps file order", "config:basic.ini#ordered", nil, func(t *testing.T, r result) {
			if got := r.rec.find(t, "ordered").local.Keys(); !slices.Equal(got, []string{"tag", "z", "a", "m"}) {
				t.Errorf("keys %v", got)
			}
		}},
		{"1.1 two [DEFAULT] headers merge", "config:defaults_twice.ini", nil, func(t *testing.T, r result) {
			wantMap(t, "global", r.rec.find(t, "main").global, map[string]string{"a": "1", "b": "2"})
		}},
		{"1.1 interpolation: nested, %%, depth 10 is fine", "config:interp.ini#deep_ok", nil, func(t *testing.T, r result) {
			wantMap(t, "local", localMap(r.rec.find(t, "deep_ok").local), map[string]string{"v0": "end"})
		}},
		{"1.1 interpolation: a value reached by reference is expanded in this section", "config:interp.ini", nil, func(t *testing.T, r result) {
			wantMap(t, "local", localMap(r.rec.find(t, "main").local), map[string]string{"a": "deep%/x", "b": "deep%"})
		}},
		{"1.5 set and get", "config:setget.ini", nil, func(t *testing.T, r result) {
			c := r.rec.find(t, "main")
			wantMap(t, "global", c.global, map[string]string{"port": "2", "debug_app": "false", "debug": "true"})
			wantMap(t, "local", localMap(c.local), map[string]string{"url": "h:1", "myport": "2", "debug": "false", "set port": absent, "port": absent})
		}},
		{"1.5 caller globals win over DEFAULT for factories, not for interpolation", "config:caller.ini",
			map[string]string{"port": "9090", "http_port": "7000", "here": "/elsewhere"}, func(t *testing.T, r result) {
				c := r.rec.find(t, "main")
				wantMap(t, "global", c.global, map[string]string{"port": "9090", "http_port": "7000", "here": "/elsewhere"})
				wantMap(t, "local", localMap(c.local), map[string]string{"url": ":8080", "bind": "7000", "where": dir})
			}},
		{"1.1 interpolation looks in the section first; 1.5 a local key named like a global is dropped", "config:caller.ini#shadow", nil, func(t *testing.T, r result) {
			wantMap(t, "local", localMap(r.rec.find(t, "shadow").local), map[string]string{"where": "mine", "here": absent})
			wantContains(t, "log", r.logs, "caller.ini:14 [app:shadow] here", "defined for every file")
		}},
		{"1.2 [app:x] wins over [application:x], with a warning", "config:prefixes.ini", nil, func(t *testing.T, r result) {
			r.rec.find(t, "app")
			wantContains(t, "log", r.logs, "prefixes.ini:5 [application:main]", "[app:main] at line 1 has the same name and wins")
		}},
		{"1.2 application alias", "config:prefixes.ini#alias", nil, func(t *testing.T, r result) { r.rec.find(t, "alias") }},
		{"1.2 composit alias", "config:prefixes.ini#comp", nil, func(t *testing.T, r result) {
			if _, ok := r.h.(*pathMap); !ok {
				t.Errorf("got %T, want the composite", r.h)
			}
		}},
		{"1.2 whitespace around the name is ignored", "config:prefixes.ini#spaced", nil, func(t *testing.T, r result) { r.rec.find(t, "spaced") }},
		{"1.2 a composite's default name finds bare [app]", "config:bare.ini#top", nil, func(t *testing.T, r result) {
			if got := get(r.h, "/"); got != "bare" {
				t.Errorf("got %q", got)
			}
		}},
		{"1.3 egg: name defaults to main", "config:uses.ini#egg_default", nil, func(t *testing.T, r result) {
			if c := r.rec.find(t, "egg_default"); c.entry != "app blog" {
				t.Errorf("entry %q", c.entry)
			}
		}},
		{"1.4 config: paths are percent-decoded", "config:uses.ini#percent", nil, func(t *testing.T, r result) { r.rec.find(t, "percent") }},
		{"1.6 use of a section in the same file", "config:uses.ini#child", nil, func(t *testing.T, r result) {
			c := r.rec.find(t, "child")
			if got := c.local.Keys(); !slices.Equal(got, []string{"a", "b", "c", "tag"}) {
				t.Errorf("keys %v", got)
			}
			wantMap(t, "local", localMap(c.local), map[string]string{"a": "base", "b": "child", "c": "child"})
		}},
		{"1.6 use = config: precedence and nested DEFAULTs", "config:uses.ini", nil, func(t *testing.T, r result) {
			c := r.rec.find(t, "main")
			wantMap(t, "global", c.global, map[string]string{"level": "top", "shared": "top", "inc_only": "inc",
				"here": dir, "__file__": filepath.Join(dir, "uses.ini"), "who": "referrer", "mine": "included"})
			wantMap(t, "local", localMap(c.local), map[string]string{"here_in": sub, "lvl": "included", "color": "red", "shared": absent})
			wantContains(t, "log", r.logs, fmt.Sprintf("sub/blog.ini:%d [app:blog] shared", lineOf(t, "sub/blog.ini", "[app:blog]", "shared")),
				"given by the caller or by the file that refers")
			n := r.s.Root[0]
			if n.Section != "app:main" || len(n.Via) != 1 || !strings.Contains(n.Via[0], "[app:blog]") {
				t.Errorf("node %+v", n)
			}
		}},
		{"1.6 use chains across files", "config:uses.ini#chain", nil, func(t *testing.T, r result) {
			wantMap(t, "local", localMap(r.rec.find(t, "chain").local), map[string]string{"from_a": "a", "from_b": "b", "from_c": "c"})
			want := []string{filepath.Join(dir, "uses.ini"), filepath.Join(sub, "a.ini"), filepath.Join(sub, "b.ini"), filepath.Join(sub, "c.ini")}
			if !slices.Equal(r.s.Files, want) {
				t.Errorf("Files %v, want %v", r.s.Files, want)
			}
		}},
		{"1.6 referrer keys are dropped on a wrapped target, its set lines are not", "config:uses.ini#wrapped", nil, func(t *testing.T, r result) {
			c := r.rec.find(t, "filtered")
			wantMap(t, "local", localMap(c.local), map[string]string{"dropped": absent})
			wantMap(t, "global", c.global, map[string]string{"who": "wrapped-referrer"})
			wantContains(t, "log", r.logs, "[app:wrapped]", "keys dropped are dropped")
		}},
		{"1.7 filter-with: the named filter is the outer layer, chains compose", "config:filterwith.ini", nil, func(t *testing.T, r result) {
			if got := get(r.h, "/"); got != "f2>f1>app" {
				t.Errorf("trace %q", got)
			}
			wantMap(t, "local", localMap(r.rec.find(t, "app").local), map[string]string{"filter-with": absent})
		}},
		{"1.7 filter-with on a pipeline gives an application", "config:filterwith.ini#pipe", nil, func(t *testing.T, r result) {
			if got := get(r.h, "/"); got != "f3>f2>f1>app2" {
				t.Errorf("trace %q", got)
			}
		}},
		{"1.7 filter-with on a filter-app gives an application", "config:filterwith.ini#fa", nil, func(t *testing.T, r result) {
			if got := get(r.h, "/"); got != "f3>fa>app2" {
				t.Errorf("trace %q", got)
			}
		}},
		{"1.8 pipeline: first filter outermost, set reaches every element", "config:pipeline.ini", nil, func(t *testing.T, r result) {
			if got := get(r.h, "/"); got != "a>b>app" {
				t.Errorf("trace %q", got)
			}
			for _, tag := range []string{"a", "b", "app"} {
				wantMap(t, tag, r.rec.find(t, tag).global, map[string]string{"shared": "pipe"})
			}
			var eps []string
			for _, c := range r.s.Root[0].Children {
				eps = append(eps, c.EntryPoint)
			}
			if !slices.Equal(eps, []string{"egg:t#trace", "egg:t#wrap", "egg:t#main"}) {
				t.Errorf("children %v", eps)
			}
		}},
		{"1.9 filter-app with next, next not passed to the factory", "config:filterapp.ini", nil, func(t *testing.T, r result) {
			if got := get(r.h, "/"); got != "outer>inner>app" {
				t.Errorf("trace %q", got)
			}
			wantMap(t, "local", localMap(r.rec.find(t, "outer").local), map[string]string{"next": absent, "use": absent})
		}},
		{"1.10 composite: names, config: and egg: children with the composite's global", "config:composite.ini", nil, func(t *testing.T, r result) {
			for path, want := range map[string]string{"/": "home", "/blog": "main", "/egg/x": "main"} {
				if got := get(r.h, path); got != want {
					t.Errorf("GET %s: %q, want %q", path, got, want)
				}
			}
			wantMap(t, "global", r.rec.find(t, "home").global, map[string]string{"marker": "comp"})
			n := r.s.Root[0]
			if n.EntryPoint != "egg:t#map" || len(n.Children) != 3 || n.Children[1].File != filepath.Join(sub, "blog.ini") {
				t.Errorf("node %+v", n)
			}
			if _, err := json.Marshal(n); err != nil {
				t.Error(err)
			}
		}},
		{"1.10 a composite resolves names in the file that defines it", "config:composite.ini#viause", nil, func(t *testing.T, r result) {
			if got := get(r.h, "/"); got != "subleaf" {
				t.Errorf("got %q, want the [app:leaf] of sub/comp.ini", got)
			}
		}},
		{"1.10 a composite loaded by URI resolves names as entry points of its dist", "egg:t#first", nil, func(t *testing.T, r result) {
			if got := get(r.h, "/"); got != "main" {
				t.Errorf("got %q", got)
			}
		}},
		{"require: every dist exists (names normalised)", "config:errors.ini#require_ok", nil, func(t *testing.T, r result) {
			wantMap(t, "local", localMap(r.rec.find(t, "require_ok").local), map[string]string{"require": absent})
		}},
		{"explicit protocol key beside use is an ordinary key", "config:errors.ini#protouse", nil, func(t *testing.T, r result) {
			wantMap(t, "local", localMap(r.rec.find(t, "protouse").local), map[string]string{"paste.app_factory": "a:b"})
			wantContains(t, "log", r.logs, "[app:protouse] paste.app_factory", "ignored as a protocol")
		}},
		{"startup coroutines of applications are collected before filters wrap", "config:startup.ini", nil, func(t *testing.T, r result) {
			if got := get(r.h, "/"); got != "a>bg" {
				t.Errorf("trace %q", got)
			}
			if got := coroutineNames(r.s); !slices.Equal(got, []string{"app:bg/a", "app:bg/b"}) {
				t.Errorf("coroutines %v", got)
			}
		}},
		{"an application composed twice gets unique coroutine names", "config:startup.ini#twice", nil, func(t *testing.T, r result) {
			if got := coroutineNames(r.s); !slices.Equal(got, []string{"app:bg/a", "app:bg/b", "app:bg/a#2", "app:bg/b#2"}) {
				t.Errorf("coroutines %v", got)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, rec, logs := newSession()
			h, err := s.LoadApp(tc.uri, dir, tc.global)
			if err != nil {
				t.Fatal(err)
			}
			if len(s.Root) != 1 {
				t.Fatalf("Root has %d trees", len(s.Root))
			}
			tc.check(t, result{s: s, rec: rec, logs: logs.String(), h: h})
		})
	}
}

func coroutineNames(s *Session) []string {
	var out []string
	for _, c := range s.Coroutines {
		out = append(out, c.Name)
	}
	return out
}

func TestLoadFilter(t *testing.T) {
	t.Parallel()
	s, _, _ := newSession()
	f, err := s.LoadFilter("config:filterwith.ini#f1", testdata(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := get(f(&tracer{tag: "x"}), "/"); got != "f2>f1>x" {
		t.Errorf("filter with filter-with: trace %q, want f2>f1>x", got)
	}
	// A filter-app factory runs when its filter is applied; its failure
	// then is logged and answered with 500.
	s, _, logs := newSession()
	f, err = s.LoadFilter("egg:t#failwrap", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	w := httptest.NewRecorder()
	f(&tracer{}).ServeHTTP(w, httptest.NewRequest("GET", "/", nil))
	if w.Code != http.StatusInternalServerError {
		t.Errorf("status %d", w.Code)
	}
	wantContains(t, "log", logs.String(), "cannot wrap")
}

func TestLoadServer(t *testing.T) {
	t.Parallel()
	dir := testdata(t)
	t.Run("startup coroutines from sections and URIs", func(t *testing.T) {
		t.Parallel()
		s, rec, _ := newSession()
		if _, err := s.LoadServer("config:startup.ini", dir, nil); err != nil {
			t.Fatal(err)
		}
		if got := coroutineNames(s); !slices.Equal(got, []string{"ticker", "egg:t#tick"}) {
			t.Fatalf("coroutines %v", got)
		}
		wantMap(t, "server local", localMap(rec.find(t, "server").local), map[string]string{"startup": absent})
		tk := s.Coroutines[0]
		wantMap(t, "ticker local", localMap(tk.Local), map[string]string{"restart": "always"})
		if want := lineOf(t, "startup.ini", "[coroutine:ticker]", ""); tk.Origin.Line != want || tk.Origin.Section != "coroutine:ticker" {
			t.Errorf("ticker origin %v, want line %d", tk.Origin, want)
		}
		if o := s.Coroutines[1].Origin; o.Section != "server:main" || o.Line != lineOf(t, "startup.ini", "[server:main]", "startup") {
			t.Errorf("URI coroutine origin %v", o)
		}
		if n := s.Root[0]; len(n.Children) != 2 || n.Children[0].Kind != "coroutine" {
			t.Errorf("node %+v", n)
		}
		// The app of the same file in the same session adds its own.
		if _, err := s.LoadApp("config:startup.ini", dir, nil); err != nil {
			t.Fatal(err)
		}
		if len(s.Coroutines) != 4 || len(s.Root) != 2 || len(s.Files) != 1 {
			t.Errorf("coroutines %v, %d roots, files %v", coroutineNames(s), len(s.Root), s.Files)
		}
	})
	t.Run("server runner", func(t *testing.T) {
		t.Parallel()
		s, _, _ := newSession()
		srv, err := s.LoadServer("config:startup.ini#runner", dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := srv(t.Context(), &tracer{}); err != nil {
			t.Error(err)
		}
	})
	t.Run("filter-with in a server section is an ordinary key", func(t *testing.T) {
		t.Parallel()
		s, rec, logs := newSession()
		if _, err := s.LoadServer("config:filterwith.ini", dir, nil); err != nil {
			t.Fatal(err)
		}
		wantMap(t, "local", localMap(rec.find(t, "server").local), map[string]string{"filter-with": "f1"})
		wantContains(t, "log", logs.String(), "[server:main] filter-with", "cannot be filtered")
	})
	t.Run("a failed load adds no coroutines", func(t *testing.T) {
		t.Parallel()
		s, _, _ := newSession()
		if _, err := s.LoadApp("config:startup.ini#fails", dir, nil); err == nil {
			t.Fatal("no error")
		}
		if len(s.Coroutines) != 0 || len(s.Root) != 0 {
			t.Errorf("coroutines %v, roots %d", coroutineNames(s), len(s.Root))
		}
	})
}

func TestAppConfig(t *testing.T) {
	t.Parallel()
	dir := testdata(t)
	s, rec, _ := newSession()
	c, err := s.AppConfig("config:setget.ini", dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	wantMap(t, "values", c.Values(), map[string]string{"port": "2", "myport": "2", "url": "h:1", "debug": "false", "here": dir})
	wantMap(t, "global", c.Global, map[string]string{"debug": "true"})

	c, err = s.AppConfig("config:filterwith.ini", dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	wantMap(t, "local", localMap(c.Local), map[string]string{"tag": "app", "filter-with": absent})
	if c.Node.EntryPoint != "filter-with" || len(c.Node.Children) != 2 {
		t.Errorf("node %+v", c.Node)
	}
	if _, err := s.AppConfig("config:composite.ini", dir, nil); err != nil {
		t.Fatal(err)
	}
	if len(rec.calls) != 0 || len(s.Root) != 0 {
		t.Errorf("AppConfig created objects: %v", rec.calls)
	}
}

// TestHereWithPercent: a '%' in the directory name does not break
// %(here)s (PasteDeploy re-interpolates here and fails).
func TestHereWithPercent(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "100%dir")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ini := "[app:main]\nuse = egg:t#main\ntag = main\nwhere = %(here)s/x\n"
	if err := os.WriteFile(filepath.Join(dir, "p.ini"), []byte(ini), 0o644); err != nil {
		t.Fatal(err)
	}
	s, rec, _ := newSession()
	if _, err := s.LoadApp("config:p.ini", dir, nil); err != nil {
		t.Fatal(err)
	}
	wantMap(t, "local", localMap(rec.find(t, "main").local), map[string]string{"where": dir + "/x"})
}

// TestCallerGlobalNotChanged: the caller's map is not written to.
func TestCallerGlobalNotChanged(t *testing.T) {
	t.Parallel()
	s, _, _ := newSession()
	g := map[string]string{"x": "1"}
	if _, err := s.LoadApp("config:setget.ini", testdata(t), g); err != nil {
		t.Fatal(err)
	}
	if len(g) != 1 {
		t.Errorf("caller's global changed: %v", g)
	}
}
