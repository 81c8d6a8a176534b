package entrypoints

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzLoad feeds arbitrary files to the parser and the loader. Invariants:
// nothing panics, every error has a message, and a file that parses formats
// to text that parses to the same sections, keys and values, stably. The
// seed corpus is every testdata file, so the seeds run with go test, and
// testdata/fuzz/FuzzLoad: inputs that once stalled fuzzing (an expansion
// bomb, composites that multiply, thousands of keys).
//
// Every input is loaded 32 times, so the sessions get bounds well below
// the defaults (which TestExpansionBomb checks): an input that reaches them
// still takes milliseconds, and fuzzing runs at a steady rate.
func FuzzLoad(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.ini"))
	if err != nil {
		f.Fatal(err)
	}
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	// One directory per fuzzing process, which runs inputs one at a time:
	// a directory per input cost more than the loads.
	dir := f.TempDir()
	path := filepath.Join(dir, "fuzz.ini")
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if parsed, err := parseINI(path, data); err == nil {
			checkRoundTrip(t, parsed)
		} else if err.Error() == "" {
			t.Fatal("parse error without a message")
		}
		check := func(err error) {
			if err != nil && err.Error() == "" {
				t.Fatalf("load error without a message: %#v", err)
			}
		}
		for _, name := range []string{"main", "a", "p", "c", "self", "twice", "bare", "top"} {
			s, _, _ := newSession()
			s.MaxExpansion, s.MaxReferences = 256<<10, 1000
			uri := "config:fuzz.ini#" + name
			_, err := s.LoadApp(uri, dir, map[string]string{"x": "1"})
			check(err)
			_, err = s.LoadFilter(uri, dir, nil)
			check(err)
			_, err = s.LoadServer(uri, dir, nil)
			check(err)
			_, err = s.AppConfig(uri, dir, nil)
			check(err)
		}
	})
}
