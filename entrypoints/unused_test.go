package entrypoints

import (
	"slices"
	"testing"
)

// TestUnused: sections of known kinds that no lookup found are reported,
// with their file and line; used ones and foreign sections are not.
func TestUnused(t *testing.T) {
	t.Parallel()
	dir := testdata(t)
	s, _, _ := newSession()
	if _, err := s.LoadServer("config:unused.ini", dir, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LoadApp("config:unused.ini", dir, nil); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, l := range s.Unused() {
		got = append(got, l.String())
	}
	want := []string{
		"unused.ini:5 [server:alternative]",
		"unused.ini:15 [app:forgotten]",
		"unused.ini:21 [filter:spare]",
	}
	if !slices.Equal(got, want) {
		t.Errorf("Unused() = %q, want %q", got, want)
	}
}
