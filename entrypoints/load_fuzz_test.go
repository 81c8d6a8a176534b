package entrypoints

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzLoad feeds arbitrary files to the parser and the loader. Invariants:
// nothing panics, every error has a message, and a file that parses formats
// to text that parses to the same sections, keys and values, stably. The
// seed corpus is every testdata file, so the seeds run with go test.
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
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		path := filepath.Join(dir, "fuzz.ini")
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
