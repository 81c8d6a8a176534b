package pastercmd

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/paster-dev/paster/internal/testsync"
)

// customModule is an out-of-tree module as a dist author writes it: a dist
// package, a paster build with the dist compiled in (the three-line main of
// the package doc) and the same dist as a plugin binary.
var customModule = map[string]string{
	"greeter/greeter.go": `// Package greeter is a dist made outside paster's module.
package greeter

import (
	"net/http"

	"github.com/paster-dev/paster/entrypoints"
)

// Dist is the greeter distribution: app main answers "greetings, NAME".
var Dist = &entrypoints.Dist{
	Name:    "greeter",
	Version: "1.2.3",
	Apps: map[string]entrypoints.AppFactory{
		"main": func(_ map[string]string, local entrypoints.Local) (http.Handler, error) {
			body := "greetings, " + local.Get("name") + "\n"
			return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				_, _ = w.Write([]byte(body))
			}), nil
		},
	},
}
`,
	"cmd/paster/main.go": `package main

import (
	pastercmd "github.com/paster-dev/paster/cmd"
	"github.com/paster-dev/paster/entrypoints"
	"example.com/custom/greeter"
)

func main() {
	entrypoints.Register(greeter.Dist)
	pastercmd.Main()
}
`,
	"cmd/paster-plugin-greeter/main.go": `package main

import (
	"example.com/custom/greeter"
	"github.com/paster-dev/paster/plugins"
)

func main() { plugins.Serve(greeter.Dist) }
`,
	"greet.ini": `[server:main]
use = egg:paster#http
host = 127.0.0.1
port = %(port)s

[app:main]
use = egg:greeter#main
name = %(who)s
`,
}

// TestCustomBuild builds an out-of-tree module against this checkout (a
// replace directive, as the README tells a dist author to write while the
// module is not published) both ways — a paster with greeter compiled in,
// and greeter as a plugin binary beside the stock paster — and serves each.
// It needs no network: dependencies come from the module cache.
func TestCustomBuild(t *testing.T) {
	t.Parallel()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, text := range customModule {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// The module's go.mod: this checkout's go version, a replace pointing at
	// it; go.sum starts as this checkout's so that -mod=mod finds every
	// dependency's checksum without asking the network.
	ours, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	goLine := regexp.MustCompile(`(?m)^go [0-9.]+$`).Find(ours)
	if goLine == nil {
		t.Fatalf("no go line in %s", filepath.Join(root, "go.mod"))
	}
	gomod := fmt.Sprintf("module example.com/custom\n\n%s\n\nrequire github.com/paster-dev/paster v0.0.0\n\nreplace github.com/paster-dev/paster => %s\n", goLine, root)
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte(gomod), 0o644); err != nil {
		t.Fatal(err)
	}
	sum, err := os.ReadFile(filepath.Join(root, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "go.sum"), sum, 0o644); err != nil {
		t.Fatal(err)
	}

	build := func(out, pkg string) {
		t.Helper()
		cmd := exec.Command("go", "build", "-o", out, pkg)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOPROXY=off", "GOWORK=off")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, b)
		}
	}
	custom := filepath.Join(dir, "bin", "paster")
	build(custom, "./cmd/paster")
	pluginDir := filepath.Join(dir, "plugins")
	build(pluginDir+"/", "./cmd/paster-plugin-greeter")

	stock := filepath.Join(binDir, "paster")
	tests := []struct {
		name   string
		exe    string
		extra  []string
		points string // the greeter line of paster points
	}{
		{name: "compiled in", exe: custom, points: "greeter 1.2.3 (compiled in)"},
		{
			name: "plugin binary", exe: stock, extra: []string{"--plugin-dir", pluginDir},
			points: "greeter 1.2.3 (" + filepath.Join(pluginDir, "paster-plugin-greeter") + ")",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(tt.exe, append([]string{"points"}, tt.extra...)...)
			cmd.Env = append(os.Environ(), "PASTER_PLUGIN_PATH=")
			out, err := cmd.CombinedOutput()
			if err != nil || !strings.Contains(string(out), tt.points) {
				t.Fatalf("paster points (%v) lacks %q:\n%s", err, tt.points, out)
			}
			port := testsync.FreePort(t)
			who := strings.ReplaceAll(tt.name, " ", "-")
			args := append([]string{"greet.ini"}, tt.extra...)
			args = append(args, fmt.Sprintf("port=%d", port), "who="+who)
			p := startServeExe(t, tt.exe, dir, port, args...)
			if code, body := p.get("/"); code != 200 || body != "greetings, "+who+"\n" {
				t.Errorf("GET / = %d %q", code, body)
			}
		})
	}
}
