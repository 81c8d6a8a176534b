package entrypoints

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Location is where a key was written: file, 1-based line and section.
// The zero Location means "not from a file" (set in code or on the command line).
type Location struct {
	File    string
	Line    int
	Section string
}

// String formats the location as "FILE:LINE [SECTION]", leaving out what is unknown.
func (l Location) String() string {
	var b strings.Builder
	if l.File != "" {
		b.WriteString(l.File)
		if l.Line > 0 {
			fmt.Fprintf(&b, ":%d", l.Line)
		}
	}
	if l.Section != "" {
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "[%s]", l.Section)
	}
	return b.String()
}

// Local is a section's local configuration: string values in file order,
// each remembering where it was written so that a bad value can be reported
// with its file, line, section and key. The zero value is empty. A Local is
// never changed after the loader hands it out; With returns a copy.
type Local struct {
	keys   []string
	values map[string]string
	where  map[string]Location

	shadows []Shadow        // keys of the section a global hides
	global  map[string]bool // keys Unshadow set to the global's value
}

// Shadow is a key a section wrote that is not in its local conf because a
// global conf value of the same name hides it: PasteDeploy's rule, which
// the loader keeps (and warns about). A server section's keys are all the
// server's settings, so server runners take the global's value instead
// (Local.Unshadow): "paster serve dev.ini port=9000" serves on 9000.
type Shadow struct {
	Key    string `json:"key"`
	Value  string `json:"value"`  // as the section wrote it, not interpolated
	Global string `json:"global"` // the global conf's value that hides it
	// At is where the section wrote the key.
	At Location `json:"-"`
}

// NewLocal returns a Local holding pairs (key, value, key, value, ...) in
// order; a repeated key keeps its first position and takes the last value.
// It panics on an odd number of arguments.
func NewLocal(pairs ...string) Local {
	if len(pairs)%2 != 0 {
		panic("entrypoints.NewLocal: odd number of arguments")
	}
	var l Local
	for i := 0; i < len(pairs); i += 2 {
		l = l.With(pairs[i], pairs[i+1], Location{})
	}
	return l
}

// clone returns a copy of l that shares nothing with it.
func (l Local) clone() Local {
	out := Local{
		keys:    append([]string(nil), l.keys...),
		values:  make(map[string]string, len(l.values)+1),
		where:   make(map[string]Location, len(l.where)+1),
		shadows: append([]Shadow(nil), l.shadows...),
		global:  make(map[string]bool, len(l.global)),
	}
	for k, v := range l.values {
		out.values[k] = v
	}
	for k, v := range l.where {
		out.where[k] = v
	}
	for k := range l.global {
		out.global[k] = true
	}
	return out
}

// With returns a copy of l with key set to value, written at loc. A new key
// goes last; an existing key keeps its position.
func (l Local) With(key, value string, loc Location) Local {
	out := l.clone()
	if _, ok := out.values[key]; !ok {
		out.keys = append(out.keys, key)
	}
	out.values[key] = value
	delete(out.global, key)
	if loc != (Location{}) {
		out.where[key] = loc
	} else {
		delete(out.where, key)
	}
	return out
}

// Without returns a copy of l without key, and without its Shadow.
func (l Local) Without(key string) Local {
	_, set := l.values[key]
	_, shadowed := l.Shadowed(key)
	if !set && !shadowed {
		return l
	}
	out := l.clone()
	out.keys = out.keys[:0]
	for _, k := range l.keys {
		if k != key {
			out.keys = append(out.keys, k)
		}
	}
	delete(out.values, key)
	delete(out.where, key)
	delete(out.global, key)
	out.shadows = out.shadows[:0]
	for _, sh := range l.shadows {
		if sh.Key != key {
			out.shadows = append(out.shadows, sh)
		}
	}
	return out
}

// WithShadow returns a copy of l that records sh, a key of the section that
// a global hides (the loader records them; a Shadow of the same key is
// replaced). The key's value is not set: Unshadow does that.
func (l Local) WithShadow(sh Shadow) Local {
	out := l.clone()
	out.shadows = out.shadows[:0]
	for _, o := range l.shadows {
		if o.Key != sh.Key {
			out.shadows = append(out.shadows, o)
		}
	}
	out.shadows = append(out.shadows, sh)
	return out
}

// Shadows returns the keys of the section that a global hides, in the
// order the section wrote them.
func (l Local) Shadows() []Shadow { return append([]Shadow(nil), l.shadows...) }

// Shadowed returns the Shadow of key and whether a global hides it.
func (l Local) Shadowed(key string) (Shadow, bool) {
	for _, sh := range l.shadows {
		if sh.Key == key {
			return sh, true
		}
	}
	return Shadow{}, false
}

// Unshadow returns a copy of l in which every key that a global hides
// (Shadows) and that is not set is set to the global's value, located where
// the section wrote the key, and the Shadows it applied (none when l has
// already been unshadowed). Errorf about such a key says that the value is
// the global's. Server runners read their settings from it, so that a
// variable given on the command line reaches them (runner.New does it).
func (l Local) Unshadow() (Local, []Shadow) {
	var applied []Shadow
	out := l
	for _, sh := range l.shadows {
		if _, set := out.values[sh.Key]; set {
			continue
		}
		out = out.With(sh.Key, sh.Global, sh.At)
		out.global[sh.Key] = true
		applied = append(applied, sh)
	}
	return out, applied
}

// Keys returns the keys in file order.
func (l Local) Keys() []string { return append([]string(nil), l.keys...) }

// Len returns the number of keys.
func (l Local) Len() int { return len(l.keys) }

// Lookup returns the value of key and whether it is set.
func (l Local) Lookup(key string) (string, bool) {
	v, ok := l.values[key]
	return v, ok
}

// Get returns the value of key, or "" when it is not set.
func (l Local) Get(key string) string { return l.values[key] }

// Where returns where key was written (zero when unknown).
func (l Local) Where(key string) Location { return l.where[key] }

// Map returns a copy of the values as a map.
func (l Local) Map() map[string]string {
	m := make(map[string]string, len(l.values))
	for k, v := range l.values {
		m[k] = v
	}
	return m
}

// Bool returns key converted with AsBool, or def when key is not set. The
// error names the key and where it was written.
func (l Local) Bool(key string, def bool) (bool, error) {
	v, ok := l.values[key]
	if !ok {
		return def, nil
	}
	b, err := AsBool(v)
	if err != nil {
		return def, l.Errorf(key, "%w", err)
	}
	return b, nil
}

// Int returns key converted with AsInt, or def when key is not set. The
// error names the key and where it was written.
func (l Local) Int(key string, def int) (int, error) {
	v, ok := l.values[key]
	if !ok {
		return def, nil
	}
	n, err := AsInt(v)
	if err != nil {
		return def, l.Errorf(key, "%w", err)
	}
	return n, nil
}

// Duration returns key as a duration, or def when key is not set or empty.
// A bare number is seconds (as in Paste's INI files: "timeout = 5"); Go
// spellings such as "1.5s" or "250ms" are accepted too.
func (l Local) Duration(key string, def time.Duration) (time.Duration, error) {
	v, ok := l.values[key]
	if !ok || strings.TrimSpace(v) == "" {
		return def, nil
	}
	d, err := AsDuration(v)
	if err != nil {
		return def, l.Errorf(key, "%w", err)
	}
	return d, nil
}

// Size returns key converted with AsSize, or def when key is not set or
// empty. The error names the key and where it was written.
func (l Local) Size(key string, def int64) (int64, error) {
	v, ok := l.values[key]
	if !ok || strings.TrimSpace(v) == "" {
		return def, nil
	}
	n, err := AsSize(v)
	if err != nil {
		return def, l.Errorf(key, "%w", err)
	}
	return n, nil
}

// List returns key split with AsList (runs of whitespace), or nil when not set.
func (l Local) List(key string) []string { return AsList(l.values[key], "") }

// Errorf returns an error about key that names where it was written:
// "FILE:LINE [SECTION] KEY: message".
//
// For a key Unshadow set, the key is followed by where its value came from:
// "FILE:LINE [SECTION] KEY (the global value, which hides the section's
// "8080"): message".
func (l Local) Errorf(key, format string, args ...any) error {
	prefix := l.where[key].String()
	if prefix != "" {
		prefix += " "
	}
	name := key
	if sh, ok := l.Shadowed(key); ok && l.global[key] {
		name = fmt.Sprintf("%s (the global value, which hides the section's %q)", key, sh.Value)
	}
	return fmt.Errorf("%s%s: %w", prefix, name, fmt.Errorf(format, args...))
}

// AsBool converts PasteDeploy's boolean spellings: after trimming and
// lower-casing, true is one of "true yes on y t 1" and false one of
// "false no off n f 0". Anything else is an error.
func AsBool(v string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "true", "yes", "on", "y", "t", "1":
		return true, nil
	case "false", "no", "off", "n", "f", "0":
		return false, nil
	}
	return false, fmt.Errorf("string is not true/false: %q", v)
}

// AsInt converts an integer as Python's int() does: surrounding whitespace, a
// sign and "_" between digits are accepted; "1.5" and "0x10" are not.
func AsInt(v string) (int, error) {
	s := strings.TrimSpace(v)
	digits := strings.TrimLeft(s, "+-")
	if digits == "" || strings.HasPrefix(digits, "_") || strings.HasSuffix(digits, "_") || strings.Contains(digits, "__") || len(s)-len(digits) > 1 {
		return 0, fmt.Errorf("bad integer value: %q", v)
	}
	n, err := strconv.ParseInt(strings.ReplaceAll(s, "_", ""), 10, 0)
	if err != nil {
		return 0, fmt.Errorf("bad integer value: %q", v)
	}
	return int(n), nil
}

// AsList splits v as PasteDeploy's aslist does: on runs of whitespace when sep
// is "" (so "" gives an empty list), else on sep with every item trimmed and
// empty items kept ("" gives one empty item).
func AsList(v, sep string) []string {
	if sep == "" {
		return strings.Fields(v)
	}
	parts := strings.Split(v, sep)
	for i := range parts {
		parts[i] = strings.TrimSpace(parts[i])
	}
	return parts
}

// AsSize converts a byte size: an integer (AsInt's spellings) with an
// optional suffix k, m or g in any case, optionally followed by "b" or "ib",
// all powers of 1024 ("64k", "10MiB", "1g"). Negative sizes are errors.
func AsSize(v string) (int64, error) {
	s := strings.ToLower(strings.TrimSpace(v))
	s = strings.TrimSuffix(strings.TrimSuffix(s, "b"), "i")
	mult := int64(1)
	if n := len(s); n > 0 {
		switch s[n-1] {
		case 'k':
			mult = 1 << 10
		case 'm':
			mult = 1 << 20
		case 'g':
			mult = 1 << 30
		}
		if mult != 1 {
			s = strings.TrimSpace(s[:n-1])
		}
	}
	n, err := AsInt(s)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("bad size %q (want bytes, e.g. 1048576 or 1m)", v)
	}
	return int64(n) * mult, nil
}

// AsDuration converts a duration: a bare number is seconds ("5", "0.25"), or
// a Go duration ("1.5s", "250ms"). Negative values are accepted; callers give
// them meaning (often "none").
func AsDuration(v string) (time.Duration, error) {
	s := strings.TrimSpace(v)
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		return time.Duration(f * float64(time.Second)), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("bad duration: %q (want seconds or a Go duration such as 1.5s)", v)
	}
	return d, nil
}
