package entrypoints

import (
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"unicode"
)

// This file reads INI files the way PasteDeploy 3.x does: Python's
// configparser.ConfigParser in strict mode with BasicInterpolation and with
// option names kept as written (spec §1.1).
//
// Why not gopkg.in/ini.v1. It was checked with the options closest to
// configparser (IgnoreInlineComment, AllowPythonMultilineValues,
// PreserveSurroundedQuote, KeyValueDelimiters "=:", Insensitive false), and it
// cannot reproduce rules that existing development.ini files depend on:
//   - it keeps no line numbers, and every loader error must name file:line;
//   - a repeated key silently takes the last value and a repeated section is
//     merged, where strict configparser reports both with the line;
//   - continuation lines keep their indentation and keep "#" comment lines,
//     where configparser strips each line and drops comment lines;
//   - a blank line inside a continued value is a parse error, where
//     configparser keeps it ("a\n\nb");
//   - continuation is "indented deeper than the first line" with no notion
//     of the indentation of the key line that configparser compares with;
//   - its %(name)s interpolation leaves unknown names in place, has no %%
//     escape and no depth limit of 10, and [DEFAULT] is not interpolated the
//     way PasteDeploy's defaults() does.
// So the line scanner below is a direct transcription of configparser's
// _read loop and BasicInterpolation. ini.v1 still serves as an independent
// oracle in the tests: on the subset of files where both agree on the rules
// (single-line values, no duplicates), both parsers must read the same
// sections, keys and values.

// iniKey is one option of a section, with its raw (uninterpolated) value.
type iniKey struct {
	name  string
	value string // continuation lines joined with "\n"
	line  int
}

// iniSection is one [section] of a file, its keys in file order.
type iniSection struct {
	name  string
	line  int
	keys  []*iniKey
	index map[string]*iniKey
	used  bool // found by a lookup of this session (Session.Unused)
}

func newSection(name string, line int) *iniSection {
	return &iniSection{name: name, line: line, index: map[string]*iniKey{}}
}

// iniFile is a parsed file. [DEFAULT] (configparser's defaults section) is
// kept apart from the other sections and is nil when the file has none.
type iniFile struct {
	path     string
	defaults *iniSection
	sections []*iniSection
	byName   map[string]*iniSection
	// byRef holds the sections [PREFIX:NAME] under "PREFIX:NAME" with NAME
	// trimmed, in file order: the loader's lookups, without a scan of
	// every section per reference.
	byRef map[string][]*iniSection
	// budget bounds the expansion of the file's values in one Session.
	budget *budget
}

// defaultSection is the name of configparser's defaults section (exact case).
const defaultSection = "DEFAULT"

// parseINI parses data read from path. Errors wrap ErrSyntax or ErrDuplicate
// and carry the file and line.
func parseINI(path string, data []byte) (*iniFile, error) {
	f := &iniFile{path: path, byName: map[string]*iniSection{}, byRef: map[string][]*iniSection{}}
	text := strings.TrimPrefix(string(data), "\ufeff")
	text = strings.ReplaceAll(text, "\r\n", "\n")
	text = strings.ReplaceAll(text, "\r", "\n")
	lines := strings.Split(text, "\n")

	var (
		cur       *iniSection
		key       *iniKey  // option whose value continuation lines extend
		parts     []string // value lines of key
		indent    int      // indentation of the line that started key
		badLines  []int    // lines with no delimiter, reported together at the end
		firstBad  string
		syntaxErr = func(line int, format string, args ...any) error {
			return &Error{Location: Location{File: path, Line: line}, Err: because(ErrSyntax, format, args...)}
		}
	)
	finish := func() {
		if key != nil {
			key.value = strings.TrimRightFunc(strings.Join(parts, "\n"), unicode.IsSpace)
		}
		key, parts = nil, nil
	}
	for i, raw := range lines {
		lineno := i + 1
		value := strings.TrimSpace(raw)
		comment := strings.HasPrefix(value, "#") || strings.HasPrefix(value, ";")
		if value == "" || comment {
			// A blank line inside a value is kept (trailing ones are
			// trimmed when the value ends); a comment line is dropped.
			if !comment && key != nil {
				parts = append(parts, "")
			}
			continue
		}
		level := leadingSpace(raw)
		if key != nil && level > indent {
			parts = append(parts, value)
			continue
		}
		indent = level
		if header, ok := sectionHeader(value); ok {
			finish()
			switch prev := f.byName[header]; {
			case header == defaultSection:
				if f.defaults == nil {
					f.defaults = newSection(header, lineno)
				}
				cur = f.defaults
			case prev != nil:
				return nil, &Error{Location: Location{File: path, Line: lineno, Section: header},
					Err: because(ErrDuplicate, "section [%s] already exists (first at line %d)", header, prev.line)}
			default:
				cur = newSection(header, lineno)
				f.sections = append(f.sections, cur)
				f.byName[header] = cur
				if prefix, name, ok := strings.Cut(header, ":"); ok {
					ref := prefix + ":" + strings.TrimSpace(name)
					f.byRef[ref] = append(f.byRef[ref], cur)
				}
			}
			continue
		}
		if cur == nil {
			return nil, syntaxErr(lineno, "file contains no section headers; the first line that is not blank or a comment must be a [section]: %q", value)
		}
		name, val, ok := splitOption(value)
		if !ok {
			// configparser keeps reading and reports every bad line at the end.
			if badLines == nil {
				firstBad = value
			}
			badLines = append(badLines, lineno)
			continue
		}
		finish()
		if prev := cur.index[name]; prev != nil {
			return nil, &Error{Location: Location{File: path, Line: lineno, Section: cur.name}, Key: name,
				Err: because(ErrDuplicate, "key %q already set in [%s] at line %d", name, cur.name, prev.line)}
		}
		key = &iniKey{name: name, line: lineno}
		parts = []string{val}
		cur.keys = append(cur.keys, key)
		cur.index[name] = key
	}
	finish()
	if len(badLines) > 0 {
		msg := fmt.Sprintf("line is not [section], key = value, key: value or a comment: %q", firstBad)
		if len(badLines) > 1 {
			msg += fmt.Sprintf(" (also lines %s)", joinInts(badLines[1:]))
		}
		return nil, syntaxErr(badLines[0], "%s", msg)
	}
	return f, nil
}

// leadingSpace counts the whitespace characters that start s: configparser's
// indentation level.
func leadingSpace(s string) int {
	n := 0
	for _, r := range s {
		if !unicode.IsSpace(r) {
			break
		}
		n++
	}
	return n
}

// sectionHeader matches configparser's permissive `\[(?P<header>.+)\]` at the
// start of a stripped line: the header runs to the last ']' and whatever
// follows it is ignored.
func sectionHeader(s string) (string, bool) {
	if !strings.HasPrefix(s, "[") {
		return "", false
	}
	end := strings.LastIndexByte(s, ']')
	if end < 2 {
		return "", false
	}
	return s[1:end], true
}

// splitOption splits "key = value" or "key: value" at the first '=' or ':'.
// The key is right-trimmed and must not be empty; the value is trimmed.
func splitOption(s string) (key, value string, ok bool) {
	i := strings.IndexAny(s, "=:")
	if i < 0 {
		return "", "", false
	}
	key = strings.TrimRightFunc(s[:i], unicode.IsSpace)
	if key == "" {
		return "", "", false
	}
	return key, strings.TrimSpace(s[i+1:]), true
}

func joinInts(ns []int) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = fmt.Sprint(n)
	}
	return strings.Join(s, ", ")
}

// format writes f back as INI text that parseINI reads as the same sections,
// keys and values: the fuzz target's round-trip check. Comments and the
// original layout are not kept.
func (f *iniFile) format() string {
	var b strings.Builder
	write := func(s *iniSection) {
		fmt.Fprintf(&b, "[%s]\n", s.name)
		for _, k := range s.keys {
			lines := strings.Split(k.value, "\n")
			fmt.Fprintf(&b, "%s = %s\n", k.name, lines[0])
			for _, l := range lines[1:] {
				if l == "" {
					b.WriteString("\n")
				} else {
					fmt.Fprintf(&b, "\t%s\n", l)
				}
			}
		}
	}
	if f.defaults != nil {
		write(f.defaults)
	}
	for _, s := range f.sections {
		write(s)
	}
	return b.String()
}

// value is a raw value visible to interpolation. Literal values (here,
// __file__ and values handed in by a caller or a referring file) are used as
// they are: they are not text written in this file, so a '%' in a directory
// name or in an already interpolated value of another file is not
// interpolated again. (PasteDeploy re-interpolates them, which fails on a
// '%' in a path and expands "%%" twice across files.)
type value struct {
	text    string
	literal bool
	line    int // 0 when not written in the file
}

// maxInterpolationDepth is configparser's MAX_INTERPOLATION_DEPTH.
const maxInterpolationDepth = 10

// maxInterpolatedSize bounds an interpolated value: ten levels of values
// that each name the next one several times grow exponentially.
const maxInterpolatedSize = 1 << 20

// DefaultMaxExpansion is the bound on the values of one INI file after
// substitution when Session.MaxExpansion is zero: values that each stay
// under the bound of one value (1 MiB) can still, by naming each other,
// expand a file of a few KiB to gigabytes.
const DefaultMaxExpansion = 64 << 20

// budget is what is left of a file's expansion bound in one Session.
type budget struct {
	used, limit int64
}

// errTooLong ends an expansion that went past its limit; interpolate says
// which limit.
var errTooLong = errors.New("value too long after substitution")

var interpolationKey = regexp.MustCompile(`^%\(([^)]+)\)s`)

// scope is what %(name)s can see from one section: the section's own keys
// first, then the file's defaults ([DEFAULT], here, __file__, merged globals).
type scope struct {
	section  *iniSection // nil for [DEFAULT] values
	defaults map[string]value
	budget   *budget // nil: only the bound of one value
}

func (sc scope) lookup(name string) (value, bool) {
	if sc.section != nil {
		if k := sc.section.index[name]; k != nil {
			return value{text: k.value, line: k.line}, true
		}
	}
	v, ok := sc.defaults[name]
	return v, ok
}

// interpolate expands raw, the value of key written at at, as
// BasicInterpolation does: %(name)s is replaced by the value of name (itself
// expanded when it contains '%', up to depth 10), %% is '%', and any other
// '%' is an error. The result counts against the file's budget. Errors wrap
// ErrInterpolation and name file, line, section and key; they quote the
// value only when key is no secret (IsSecret), and no part of a secret
// value it names.
func (sc scope) interpolate(at Location, key, raw string) (string, error) {
	limit, total := int64(maxInterpolatedSize), false
	if sc.budget != nil && sc.budget.limit-sc.budget.used < limit {
		limit, total = sc.budget.limit-sc.budget.used, true
	}
	var b strings.Builder
	err := sc.expand(&b, raw, 1, int(limit), IsSecret(key))
	if err == nil && int64(b.Len()) > limit {
		err = errTooLong
	}
	switch {
	case err == errTooLong && total:
		err = fmt.Errorf("the values of %s expand to more than %s in total after %%(name)s substitution (the bound for one file; values naming each other multiply)",
			filepath.Base(at.File), byteSize(sc.budget.limit))
	case err == errTooLong:
		err = fmt.Errorf("value longer than %d bytes after substitution", maxInterpolatedSize)
	}
	if err != nil {
		return "", &Error{Location: at, Key: key, Err: because(ErrInterpolation, "%v (value: %q)", err, Redact(key, raw))}
	}
	if sc.budget != nil {
		sc.budget.used += int64(b.Len())
	}
	return b.String(), nil
}

// byteSize writes n in MiB when it is a whole number of them.
func byteSize(n int64) string {
	if n >= 1<<20 && n%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d bytes", n)
}

// expand writes rest, expanded, to b; it stops with errTooLong once b holds
// more than limit bytes. With secret, rest is (part of) a secret value, and
// errors do not quote it.
func (sc scope) expand(b *strings.Builder, rest string, depth, limit int, secret bool) error {
	quote := func(s string) string {
		if secret {
			return Redacted
		}
		return strconv.Quote(s)
	}
	if depth > maxInterpolationDepth {
		return fmt.Errorf("recursion limit exceeded in value substitution (more than %d levels of %%(name)s)", maxInterpolationDepth)
	}
	for rest != "" {
		if b.Len() > limit {
			return errTooLong
		}
		p := strings.IndexByte(rest, '%')
		if p < 0 {
			b.WriteString(rest)
			return nil
		}
		b.WriteString(rest[:p])
		rest = rest[p:]
		switch {
		case strings.HasPrefix(rest, "%%"):
			b.WriteByte('%')
			rest = rest[2:]
		case strings.HasPrefix(rest, "%("):
			m := interpolationKey.FindStringSubmatch(rest)
			if m == nil {
				return fmt.Errorf("bad interpolation variable reference %s: write %%(name)s, or %%%% for a literal %%", quote(rest))
			}
			name := m[1]
			rest = rest[len(m[0]):]
			v, ok := sc.lookup(name)
			if !ok {
				msg := fmt.Sprintf("bad value substitution: %%(%s)s names no key of this section or of [DEFAULT]", name)
				if s := Suggest(name, sc.names()); s != "" {
					msg += fmt.Sprintf("; did you mean %q?", s)
				}
				return errors.New(msg)
			}
			if !v.literal && strings.Contains(v.text, "%") {
				if err := sc.expand(b, v.text, depth+1, limit, secret || IsSecret(name)); err != nil {
					return err
				}
			} else {
				b.WriteString(v.text)
			}
		default:
			return fmt.Errorf("'%%' must be followed by '%%' or '(', found: %s (write %%%% for a literal %%)", quote(rest))
		}
	}
	return nil
}

func (sc scope) names() []string {
	var out []string
	if sc.section != nil {
		for _, k := range sc.section.keys {
			out = append(out, k.name)
		}
	}
	for k := range sc.defaults {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
