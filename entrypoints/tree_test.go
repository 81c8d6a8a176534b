package entrypoints

import (
	"testing"
)

// TestNodeConf: every node of a composition keeps what the resolver knew —
// the local conf its factory got, each key with where it was written (its
// file relative to the base directory, as factories see it), and where its
// dist came from: "" compiled in, else the plugin binary (Dist.Binary).
func TestNodeConf(t *testing.T) {
	t.Parallel()
	const ini = `[server:main]
use = egg:t#srv
tag = server
startup = tick

[coroutine:tick]
use = egg:t#tick
tag = tick

[pipeline:main]
pipeline = trace remote

[filter:trace]
use = egg:t#trace
tag = filter

[app:remote]
use = egg:Remote#main
tag = app
`
	dir := writeINI(t, "dev.ini", ini)
	reg, _ := testRegistry()
	res := newResolver()
	res.dist.Binary = "/opt/plugins/paster-plugin-remote"
	s := &Session{Registry: reg, Resolver: res}
	if _, err := s.LoadServer("config:dev.ini", dir, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LoadApp("config:dev.ini", dir, nil); err != nil {
		t.Fatal(err)
	}
	want := map[string]struct {
		line   int
		binary string
	}{
		"server": {3, ""}, "tick": {8, ""}, "filter": {15, ""}, "app": {19, "/opt/plugins/paster-plugin-remote"},
	}
	seen := map[string]bool{}
	var walk func(n *Node)
	walk = func(n *Node) {
		if tag := n.Conf().Get("tag"); tag != "" {
			seen[tag] = true
			w, ok := want[tag]
			if at := n.Conf().Where("tag"); !ok || at.File != "dev.ini" || at.Line != w.line || at.Section != n.Section {
				t.Errorf("node %s: tag %q written at %v, want dev.ini:%d [%s]", n.Section, tag, at, w.line, n.Section)
			}
			if n.Binary != w.binary {
				t.Errorf("node %s: binary %q, want %q", n.Section, n.Binary, w.binary)
			}
		}
		for _, c := range n.Children {
			walk(c)
		}
	}
	for _, r := range s.Root {
		walk(r)
	}
	if len(seen) != len(want) {
		t.Errorf("nodes with a conf: %v, want %d: the server, its coroutine, the filter and the app", seen, len(want))
	}
}
