package builtin

import (
	"context"
	"net/http"
	"net/url"
	"path"
	"strings"
)

type scriptNameKey struct{}

// ScriptName returns the path prefix under which the request reached the
// current app (Paste's SCRIPT_NAME): what urlmap and prefix moved out of
// r.URL.Path, decoded, without a trailing slash; "" at the root. An app
// builds links to itself as ScriptName(r) + "/its/path".
func ScriptName(r *http.Request) string {
	s, _ := r.Context().Value(scriptNameKey{}).(string)
	return s
}

// WithScriptName returns a shallow copy of r whose ScriptName is name
// (replacing, not appending). Dispatchers other than urlmap and prefix use it
// to pass the mount point on.
func WithScriptName(r *http.Request, name string) *http.Request {
	return r.WithContext(context.WithValue(r.Context(), scriptNameKey{}, name))
}

// Scheme returns the scheme the client used: r.URL.Scheme when set (the
// prefix filter sets it from X-Forwarded-Scheme/-Proto or its scheme key),
// else "https" for a TLS connection and "http" otherwise.
func Scheme(r *http.Request) string {
	if r.URL != nil && r.URL.Scheme != "" {
		return strings.ToLower(r.URL.Scheme)
	}
	if r.TLS != nil {
		return "https"
	}
	return "http"
}

// normalizePrefix turns a mount path into its canonical form: leading
// slash, no trailing slash, "" for the root.
func normalizePrefix(p string) string {
	p = strings.TrimRight(p, "/")
	if p != "" && !strings.HasPrefix(p, "/") {
		p = "/" + p
	}
	return p
}

// matchPrefix reports whether path is prefix or lies under it on a segment
// boundary (/api matches /api and /api/x, not /apix), and returns the rest.
// The rest of an exact match is "/" (see mount).
func matchPrefix(path, prefix string) (rest string, ok bool) {
	if prefix == "" {
		if path == "" {
			path = "/"
		}
		return path, true
	}
	if !strings.HasPrefix(path, prefix) {
		return "", false
	}
	rest = path[len(prefix):]
	switch {
	case rest == "":
		return "/", true
	case rest[0] == '/':
		return rest, true
	}
	return "", false
}

// mount returns a copy of r for the app mounted at prefix, which must match
// r.URL.Path (matchPrefix): the prefix moves from r.URL.Path to the script
// name, appended to any the request already has. RawPath is cut at the same
// place so that it stays consistent with Path.
//
// A request for exactly the prefix (/api) reaches the app with Path "/",
// not Paste's empty PATH_INFO: Go handlers expect a rooted path, and
// http.ServeMux would redirect an empty one to the host's root, outside the
// mount. An app that must tell /api from /api/ (for relative links) looks at
// r.RequestURI, which is never rewritten; the static app does.
func mount(r *http.Request, prefix, scriptName string) *http.Request {
	rest, _ := matchPrefix(r.URL.Path, prefix)
	r2 := WithScriptName(r, scriptName)
	u := *r.URL
	u.Path = rest
	u.RawPath = cutRawPath(r.URL.RawPath, prefix, rest)
	r2.URL = &u
	return r2
}

// cutRawPath removes the escaped form of prefix from raw, the RawPath of a
// URL whose Path starts with prefix, and returns the RawPath for rest: ""
// when raw is "" or when rest needs no special encoding.
func cutRawPath(raw, prefix, rest string) string {
	if raw == "" {
		return ""
	}
	// Walk raw until as many decoded bytes as the prefix has are consumed.
	i, n := 0, 0
	for n < len(prefix) && i < len(raw) {
		if raw[i] == '%' && i+2 < len(raw) {
			i += 3
		} else {
			i++
		}
		n++
	}
	if dec, err := url.PathUnescape(raw[:i]); err != nil || dec != prefix {
		return "" // inconsistent RawPath: let Path speak
	}
	out := raw[i:]
	if out == "" {
		out = "/"
	}
	if dec, err := url.PathUnescape(out); err != nil || dec != rest {
		return ""
	}
	if (&url.URL{Path: rest}).EscapedPath() == out {
		return ""
	}
	return out
}

// clientPathHasSlash reports whether the path the client asked for ends in
// a slash. Mounting turns both /static and /static/ into Path "/", so for
// the root of a mount the answer comes from r.RequestURI.
func clientPathHasSlash(r *http.Request) bool {
	p := r.URL.Path
	if p != "/" && p != "" {
		return strings.HasSuffix(p, "/")
	}
	if r.RequestURI == "" {
		return p == "/"
	}
	ru := r.RequestURI
	if i := strings.IndexByte(ru, '?'); i >= 0 {
		ru = ru[:i]
	}
	if u, err := url.Parse(ru); err == nil && u.Path != "" {
		ru = u.Path
	}
	return strings.HasSuffix(ru, "/")
}

// siteRedirect answers code (a 3xx) with a Location on this site: target,
// a path, is cleaned (a trailing slash is kept) and starts with exactly one
// slash, so no request path ("//host/..", "/\host", "/%2f%2fhost") can
// turn into a scheme-relative URL that browsers follow to another host; a
// backslash is sent escaped (%5C). rawQuery, when not empty, is appended.
func siteRedirect(w http.ResponseWriter, r *http.Request, target, rawQuery string, code int) {
	trailing := strings.HasSuffix(target, "/")
	p := "/" + strings.TrimLeft(path.Clean("/"+target), "/")
	if trailing && p != "/" {
		p += "/"
	}
	loc := (&url.URL{Path: p}).EscapedPath()
	if rawQuery != "" {
		loc += "?" + rawQuery
	}
	http.Redirect(w, r, loc, code)
}
