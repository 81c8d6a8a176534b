package entrypoints

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
)

// Scheme is the part of a URI before the first colon, lower-cased.
type Scheme string

// The URI schemes the loader understands.
const (
	SchemeConfig Scheme = "config" // config:PATH#NAME: a section of another INI file
	SchemeEgg    Scheme = "egg"    // egg:DIST#NAME: an entry point of a dist
	SchemePlugin Scheme = "plugin" // plugin:PATH#NAME: an entry point of a plugin binary
	SchemeCall   Scheme = "call"   // call:module:attr: Python-only; refused with advice
)

// ErrBadURI is wrapped by every URI parsing error.
var ErrBadURI = errors.New("bad URI")

// URI is a parsed reference: scheme, what it points at (a path or a dist
// name) and the name after '#' ("" when absent; callers default it to "main").
type URI struct {
	Scheme Scheme
	Target string
	Name   string
}

// String formats the URI back as SCHEME:TARGET[#NAME].
func (u URI) String() string {
	s := string(u.Scheme) + ":" + u.Target
	if u.Name != "" {
		s += "#" + u.Name
	}
	return s
}

var schemePrefix = regexp.MustCompile(`^[A-Za-z]+:`)

// IsURI reports whether s is a URI rather than a section name: PasteDeploy
// treats anything that starts with letters and a colon as a URI.
func IsURI(s string) bool { return schemePrefix.MatchString(s) }

// ParseURI parses egg:, config: and plugin: URIs. Paths of config: and
// plugin: URIs get PasteDeploy's treatment: backslashes become slashes, a
// leading "///" becomes "/", percent-escapes are decoded and surrounding
// whitespace is removed. call: is refused with an error that says what to use
// instead.
func ParseURI(s string) (URI, error) {
	i := strings.IndexByte(s, ':')
	if i < 0 {
		return URI{}, fmt.Errorf("%w: URI has no scheme: %q (want egg:DIST#NAME, config:PATH#NAME or plugin:PATH#NAME)", ErrBadURI, s)
	}
	u := URI{Scheme: Scheme(strings.ToLower(s[:i]))}
	rest := s[i+1:]
	if j := strings.IndexByte(rest, '#'); j >= 0 {
		rest, u.Name = rest[:j], strings.TrimSpace(rest[j+1:])
	}
	switch u.Scheme {
	case SchemeEgg:
		u.Target = strings.TrimSpace(rest)
		if u.Target == "" {
			return URI{}, fmt.Errorf("%w: %q names no distribution", ErrBadURI, s)
		}
	case SchemeConfig, SchemePlugin:
		p := strings.ReplaceAll(rest, `\`, "/")
		if strings.HasPrefix(p, "///") {
			p = "/" + strings.TrimLeft(p, "/")
		}
		dec, err := url.PathUnescape(p)
		if err != nil {
			return URI{}, fmt.Errorf("%w: %q: %v", ErrBadURI, s, err)
		}
		u.Target = strings.TrimSpace(dec)
		if u.Target == "" {
			return URI{}, fmt.Errorf("%w: %q names no file", ErrBadURI, s)
		}
	case SchemeCall:
		return URI{}, fmt.Errorf("%w: %q: call: imports Python objects and has no Go equivalent; compile the factory into a dist and use egg:DIST#NAME, or ship it as a plugin binary and use plugin:PATH#NAME", ErrBadURI, s)
	default:
		return URI{}, fmt.Errorf("%w: URI scheme not known: %q (from config, egg, plugin)", ErrBadURI, string(u.Scheme))
	}
	return u, nil
}
