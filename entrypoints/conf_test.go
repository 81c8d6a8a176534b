package entrypoints

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// TestConverters: PasteDeploy's asbool, asint and aslist spellings, and
// paster's sizes and durations.
func TestConverters(t *testing.T) {
	t.Parallel()
	bools := []struct {
		in   string
		want bool
		bad  bool
	}{
		{"true", true, false}, {" Yes ", true, false}, {"on", true, false}, {"y", true, false}, {"T", true, false}, {"1", true, false},
		{"false", false, false}, {"NO", false, false}, {"off", false, false}, {"n", false, false}, {"f", false, false}, {"0", false, false},
		{"", false, true}, {"maybe", false, true}, {"2", false, true},
	}
	for _, tc := range bools {
		got, err := AsBool(tc.in)
		if (err != nil) != tc.bad || got != tc.want {
			t.Errorf("AsBool(%q) = %v, %v", tc.in, got, err)
		}
	}
	ints := []struct {
		in   string
		want int
		bad  bool
	}{
		{"42", 42, false}, {" -7 ", -7, false}, {"+3", 3, false}, {"1_000", 1000, false},
		{"1.5", 0, true}, {"0x10", 0, true}, {"", 0, true}, {"_1", 0, true}, {"1__0", 0, true}, {"--1", 0, true},
	}
	for _, tc := range ints {
		got, err := AsInt(tc.in)
		if (err != nil) != tc.bad || got != tc.want {
			t.Errorf("AsInt(%q) = %v, %v", tc.in, got, err)
		}
	}
	lists := []struct {
		in, sep string
		want    []string
	}{
		{"a b\n c", "", []string{"a", "b", "c"}},
		{"", "", nil},
		{"a, b,,c", ",", []string{"a", "b", "", "c"}},
		{"", ",", []string{""}},
	}
	for _, tc := range lists {
		if got := AsList(tc.in, tc.sep); !slices.Equal(got, tc.want) {
			t.Errorf("AsList(%q, %q) = %q, want %q", tc.in, tc.sep, got, tc.want)
		}
	}
	sizes := []struct {
		in   string
		want int64
		bad  bool
	}{
		{"1048576", 1 << 20, false}, {"64k", 64 << 10, false}, {"10MiB", 10 << 20, false}, {"1 g", 1 << 30, false}, {"2KB", 2 << 10, false},
		{"-1", 0, true}, {"1.5m", 0, true}, {"lots", 0, true}, {"", 0, true},
	}
	for _, tc := range sizes {
		got, err := AsSize(tc.in)
		if (err != nil) != tc.bad || got != tc.want {
			t.Errorf("AsSize(%q) = %v, %v", tc.in, got, err)
		}
	}
	durations := []struct {
		in   string
		want time.Duration
		bad  bool
	}{
		{"5", 5 * time.Second, false}, {"0.25", 250 * time.Millisecond, false}, {"1.5s", 1500 * time.Millisecond, false},
		{"-1", -time.Second, false}, {"soon", 0, true},
	}
	for _, tc := range durations {
		got, err := AsDuration(tc.in)
		if (err != nil) != tc.bad || got != tc.want {
			t.Errorf("AsDuration(%q) = %v, %v", tc.in, got, err)
		}
	}
}

// TestLocal: order is file order, With and Without copy, and conversion
// errors name where the key was written.
func TestLocal(t *testing.T) {
	t.Parallel()
	at := Location{File: "dev.ini", Line: 7, Section: "server:main"}
	l := NewLocal("port", "80", "host", "h").With("port", "eighty", at).With("debug", "yes", Location{})
	if got := l.Keys(); !slices.Equal(got, []string{"port", "host", "debug"}) {
		t.Errorf("Keys() = %q", got)
	}
	if got := l.Without("host").Keys(); !slices.Equal(got, []string{"port", "debug"}) || l.Len() != 3 {
		t.Errorf("Without changed the original or kept host: %q, len %d", got, l.Len())
	}
	if _, err := l.Int("port", 1); err == nil || !strings.Contains(err.Error(), "dev.ini:7 [server:main] port: bad integer value") {
		t.Errorf("Int error %v", err)
	}
	if b, err := l.Bool("debug", false); err != nil || !b {
		t.Errorf("Bool = %v, %v", b, err)
	}
	if n, err := l.Size("missing", 9); err != nil || n != 9 {
		t.Errorf("Size default = %v, %v", n, err)
	}
	if _, err := NewLocal("max", "big").With("max", "big", at).Size("max", 0); err == nil || !strings.Contains(err.Error(), "dev.ini:7 [server:main] max: bad size") {
		t.Errorf("Size error %v", err)
	}
	if d, err := l.Duration("missing", time.Minute); err != nil || d != time.Minute {
		t.Errorf("Duration default = %v, %v", d, err)
	}
}
