package plugins

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/paster-dev/paster/entrypoints"
)

// TestFind (issue 9.7): the plugin path an error lists names each directory
// once, a candidate that is not executable is named instead of skipped in
// silence, and DistNames lists the dists the path holds, for the loader's
// did-you-mean. Find starts nothing, so the files here are never run.
func TestFind(t *testing.T) {
	t.Parallel()
	write := func(t *testing.T, dir, name string, mode os.FileMode) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("#!/bin/sh\nexit 1\n"), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // past the umask
			t.Fatal(err)
		}
		return p
	}
	cases := []struct {
		name  string
		setup func(t *testing.T, a, b string) (HostOptions, entrypoints.Origin)
		find  string
		check func(t *testing.T, a, b, path string, err error, names []string)
	}{
		{"a directory given twice is listed once", func(t *testing.T, a, b string) (HostOptions, entrypoints.Origin) {
			ini := filepath.Join(filepath.Dir(a), "dev.ini")
			return HostOptions{PluginDirs: []string{a, a + "/", b}},
				entrypoints.Origin{Location: entrypoints.Location{File: ini}, Plugins: map[string]string{"path": filepath.Base(a) + " " + b}}
		}, "nosuch", func(t *testing.T, a, b, _ string, err error, _ []string) {
			if !errors.Is(err, entrypoints.ErrNoDist) {
				t.Fatalf("err = %v, want ErrNoDist", err)
			}
			for _, d := range []string{a, b} {
				if n := strings.Count(err.Error(), d); n != 1 {
					t.Errorf("%s is listed %d times: %v", d, n, err)
				}
			}
		}},
		{"a candidate that is not executable is named", func(t *testing.T, a, b string) (HostOptions, entrypoints.Origin) {
			write(t, b, BinaryPrefix+"helo", 0o644)
			return HostOptions{PluginDirs: []string{a, b}}, entrypoints.Origin{}
		}, "helo", func(t *testing.T, a, b, _ string, err error, names []string) {
			if !errors.Is(err, entrypoints.ErrNoDist) {
				t.Fatalf("err = %v, want ErrNoDist", err)
			}
			want := "found but not executable: " + filepath.Join(b, BinaryPrefix+"helo") + " (mode -rw-r--r--"
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not contain %q", err, want)
			}
			if slices.Contains(names, "helo") {
				t.Errorf("DistNames lists the file that is not executable: %q", names)
			}
		}},
		{"an executable later in the path is found", func(t *testing.T, a, b string) (HostOptions, entrypoints.Origin) {
			write(t, a, BinaryPrefix+"hello", 0o644)
			write(t, b, BinaryPrefix+"hello", 0o755)
			write(t, b, BinaryPrefix+"wsecho", 0o755)
			return HostOptions{PluginDirs: []string{a, b, b}}, entrypoints.Origin{}
		}, "hello", func(t *testing.T, a, b, path string, err error, names []string) {
			if err != nil || path != filepath.Join(b, BinaryPrefix+"hello") {
				t.Fatalf("Find = %q, %v", path, err)
			}
			if !slices.Equal(names, []string{"hello", "wsecho"}) {
				t.Errorf("DistNames = %q, want [hello wsecho]", names)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			root := t.TempDir()
			a, b := filepath.Join(root, "a"), filepath.Join(root, "b")
			for _, d := range []string{a, b} {
				if err := os.Mkdir(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			opts, from := tc.setup(t, a, b)
			h := NewHost(opts)
			path, err := h.Find(tc.find, from)
			tc.check(t, a, b, path, err, h.DistNames(from))
		})
	}
}
