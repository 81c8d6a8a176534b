package entrypoints

import (
	"fmt"
	"slices"
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
	l := Local{keys: make([]string, 0, len(pairs)/2), values: make(map[string]string, len(pairs)/2), where: map[string]Location{}}
	for i := 0; i < len(pairs); i += 2 {
		l.set(pairs[i], pairs[i+1], Location{})
	}
	return l
}

// LocalEntry is one key of a Local: its value and where it was written
// (zero when unknown).
type LocalEntry struct {
	Key, Value string
	Where      Location
}

// LocalOf returns a Local holding entries in order, in time linear in their
// number (a chain of With calls copies the Local each time); a repeated key
// keeps its first position and takes the last value and location.
func LocalOf(entries ...LocalEntry) Local {
	l := Local{keys: make([]string, 0, len(entries)), values: make(map[string]string, len(entries)), where: make(map[string]Location, len(entries))}
	for _, e := range entries {
		l.set(e.Key, e.Value, e.Where)
	}
	return l
}

// With returns a copy of l with key set to value, written at loc. A new key
// goes last; an existing key keeps its position. Each call copies l: to
// build a Local of many keys use LocalOf.
func (l Local) With(key, value string, loc Location) Local {
	out := l.clone(1)
	out.set(key, value, loc)
	return out
}

// clone returns a copy of l that shares nothing with it, with room for
// extra more keys.
func (l Local) clone(extra int) Local {
	out := Local{
		keys:    make([]string, len(l.keys), len(l.keys)+extra),
		values:  make(map[string]string, len(l.values)+extra),
		where:   make(map[string]Location, len(l.where)+extra),
		shadows: append([]Shadow(nil), l.shadows...),
		global:  make(map[string]bool, len(l.global)),
	}
	copy(out.keys, l.keys)
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

// set sets key in l itself. Only for a Local that is being built and
// shares its maps with no other (from clone, LocalOf or NewLocal): a Local
// handed out never changes.
func (l *Local) set(key, value string, loc Location) {
	if l.values == nil {
		l.values, l.where = map[string]string{}, map[string]Location{}
	}
	if _, ok := l.values[key]; !ok {
		l.keys = append(l.keys, key)
	}
	l.values[key] = value
	delete(l.global, key)
	if loc != (Location{}) {
		l.where[key] = loc
	} else {
		delete(l.where, key)
	}
}

// Without returns a copy of l without key, and without its Shadow.
func (l Local) Without(key string) Local {
	_, set := l.values[key]
	_, shadowed := l.Shadowed(key)
	if !set && !shadowed {
		return l
	}
	out := l.clone(0)
	out.keys = slices.DeleteFunc(out.keys, func(k string) bool { return k == key })
	delete(out.values, key)
	delete(out.where, key)
	delete(out.global, key)
	out.shadows = slices.DeleteFunc(out.shadows, func(sh Shadow) bool { return sh.Key == key })
	return out
}

// WithShadow returns a copy of l that records shs, keys of the section that
// a global hides (the loader records them; a Shadow of the same key is
// replaced). The keys' values are not set: Unshadow does that.
func (l Local) WithShadow(shs ...Shadow) Local {
	out := l.clone(0)
	for _, sh := range shs {
		out.shadow(sh)
	}
	return out
}

// shadow records sh in l itself, replacing a Shadow of the same key; as
// set, only for a Local being built. A key's Shadow is looked for only
// when l already records some (a section records each key once).
func (l *Local) shadow(sh Shadow) {
	l.shadows = slices.DeleteFunc(l.shadows, func(o Shadow) bool { return o.Key == sh.Key })
	l.shadows = append(l.shadows, sh)
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
//
// When IsSecret(key), the key's value (and the section's hidden one) is
// replaced by Redacted in the message.
func (l Local) Errorf(key, format string, args ...any) error {
	prefix := l.where[key].String()
	if prefix != "" {
		prefix += " "
	}
	name := key
	if sh, ok := l.Shadowed(key); ok && l.global[key] {
		name = fmt.Sprintf("%s (the global value, which hides the section's %q)", key, Redact(key, sh.Value))
	}
	err := fmt.Errorf(format, args...)
	if IsSecret(key) {
		err = redactErr(err, []string{l.values[key]})
	}
	return fmt.Errorf("%s%s: %w", prefix, name, err)
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
