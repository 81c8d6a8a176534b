package entrypoints

import (
	"net/http"
	"path/filepath"
	"slices"
	"testing"
)

// closing is an app, or a filtered handler, that records its Close.
type closing struct {
	http.Handler
	name   string
	closed *[]string
}

func (c *closing) Close() error { *c.closed = append(*c.closed, c.name); return nil }

// TestSessionClose: Session.Close closes every object the factories made
// that implements io.Closer — apps, filter-apps' and filters' handlers,
// composites — the last made first, each once even when a composite
// returns its child as it is.
func TestSessionClose(t *testing.T) {
	t.Parallel()
	var closed []string
	wrap := func(name string, next http.Handler) http.Handler {
		return &closing{Handler: next, name: name, closed: &closed}
	}
	d := &Dist{
		Name: "closers",
		Apps: map[string]AppFactory{"main": func(_ map[string]string, local Local) (http.Handler, error) {
			return wrap("app "+local.Get("name"), http.NotFoundHandler()), nil
		}},
		FilterApps: map[string]FilterAppFactory{"log": func(next http.Handler, _ map[string]string, _ Local) (http.Handler, error) {
			return wrap("filter-app", next), nil
		}},
		Filters: map[string]FilterFactory{"stamp": func(map[string]string, Local) (Filter, error) {
			return func(next http.Handler) http.Handler { return wrap("filter", next) }, nil
		}},
		Composites: map[string]CompositeFactory{"only": func(l Loader, global map[string]string, local Local) (http.Handler, error) {
			return l.App(local.Get("child"), global) // the child as it is
		}},
	}
	reg := &Registry{}
	if err := reg.Add(d); err != nil {
		t.Fatal(err)
	}
	dir := writeINI(t, "c.ini", `[composite:main]
use = egg:closers#only
child = a

[app:a]
use = egg:closers#main
name = a
filter-with = stamp

[filter:stamp]
use = egg:closers#stamp
filter-with = log

[filter:log]
use = egg:closers#log
`)
	s := &Session{Registry: reg}
	if _, err := s.LoadApp("config:"+filepath.Join(dir, "c.ini"), dir, nil); err != nil {
		t.Fatal(err)
	}
	if len(closed) != 0 {
		t.Fatalf("closed while loading: %v", closed)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	want := []string{"filter-app", "filter", "app a"}
	if !slices.Equal(closed, want) {
		t.Errorf("closed %v, want %v", closed, want)
	}
	if err := s.Close(); err != nil || len(closed) != len(want) {
		t.Errorf("a second Close: %v, closed %v", err, closed)
	}
}
