package builtin

import (
	"fmt"
	"net"
	"net/http"
	"sort"
	"strings"

	"github.com/paster-dev/paster/entrypoints"
	"github.com/paster-dev/paster/runner"
	"github.com/paster-dev/paster/runner/observe"
)

// urlmapFactory is egg:paster#urlmap, Paste's URLMap composite. Every local
// key except not_found_app is a path expression, "/path" or
// "domain HOST [port N] [/path]", whose value names the app to mount there
// (a section name or URI, loaded with the composite's global conf).
// not_found_app (local, else global) names the app for requests no entry
// matches; the default answers 404.
//
// Dispatch: entries with a domain come first, longer paths before shorter
// ones, and among domain entries with the same path one with a port before
// one without (Paste sorted by domain name, which let "domain h /" hide
// "domain h port N /x"); a path matches on segment boundaries (/api matches
// /api and /api/x, not /apix). The matched path moves from r.URL.Path to
// ScriptName(r), appended to any script name the request had, so nested
// urlmaps compose. An exact match (/api) gives the app Path "/" (see
// ScriptName and the static app for telling /api from /api/). A domain entry
// without a port matches any port; one with a port matches the Host's port,
// or 80/443 by scheme when the Host has none.
//
// Errors, each naming the key: a malformed path expression, two keys for
// the same domain and path, an app that fails to load.
func urlmapFactory(l entrypoints.Loader, global map[string]string, local entrypoints.Local) (http.Handler, error) {
	m := &urlMap{notFound: http.HandlerFunc(notFound)}
	seen := map[string]string{}
	for _, key := range local.Keys() {
		if key == "not_found_app" {
			continue
		}
		domain, path, err := parsePathExpression(key)
		if err != nil {
			return nil, local.Errorf(key, "%w", err)
		}
		id := domain + " " + path
		if prev, dup := seen[id]; dup {
			return nil, local.Errorf(key, "same mount point as key %q", prev)
		}
		seen[id] = key
		app, err := l.App(strings.TrimSpace(local.Get(key)), global)
		if err != nil {
			return nil, local.Errorf(key, "%w", err)
		}
		m.entries = append(m.entries, urlMapEntry{domain: domain, path: path, app: app})
		if domain != "" {
			m.domains = true
		}
	}
	name, ok := local.Lookup("not_found_app")
	if !ok {
		name = global["not_found_app"]
	}
	if name = strings.TrimSpace(name); name != "" {
		app, err := l.App(name, global)
		if err != nil {
			if ok {
				return nil, local.Errorf("not_found_app", "%w", err)
			}
			return nil, fmt.Errorf("global not_found_app: %w", err)
		}
		m.notFound = app
	}
	sort.SliceStable(m.entries, func(i, j int) bool {
		a, b := m.entries[i], m.entries[j]
		if (a.domain == "") != (b.domain == "") {
			return a.domain != ""
		}
		if len(a.path) != len(b.path) {
			return len(a.path) > len(b.path)
		}
		if ap, bp := strings.Contains(a.domain, ":"), strings.Contains(b.domain, ":"); ap != bp {
			return ap
		}
		return a.domain < b.domain
	})
	return m, nil
}

// parsePathExpression parses Paste's path expressions: "/path", or words
// "domain HOST", "port N" and a path in any order ("port" needs "domain").
// It returns the domain (lower-cased, with ":N" when a port is given) and
// the normalized path ("" for the root).
func parsePathExpression(expr string) (domain, path string, err error) {
	parts := strings.Fields(expr)
	var port string
	var havePath bool
	for len(parts) > 0 {
		switch parts[0] {
		case "domain", "port":
			word := parts[0]
			if len(parts) < 2 {
				return "", "", fmt.Errorf("%q must be followed by a %s", word, map[string]string{"domain": "domain name", "port": "port number"}[word])
			}
			if (word == "domain" && domain != "") || (word == "port" && port != "") {
				return "", "", fmt.Errorf("%q given twice", word)
			}
			if word == "domain" {
				domain = strings.ToLower(parts[1])
			} else {
				port = parts[1]
			}
			parts = parts[2:]
		default:
			if havePath {
				return "", "", fmt.Errorf("more than one path given (have %q, got %q)", path, parts[0])
			}
			if !strings.HasPrefix(parts[0], "/") {
				return "", "", fmt.Errorf("URL paths must start with / (or use \"domain HOST /path\"), got %q", parts[0])
			}
			path, havePath = parts[0], true
			parts = parts[1:]
		}
	}
	if port != "" {
		if domain == "" {
			return "", "", fmt.Errorf("a port needs a domain (\"domain HOST port %s /path\")", port)
		}
		domain += ":" + port
	}
	if !havePath && domain == "" {
		return "", "", fmt.Errorf("empty path expression")
	}
	return domain, normalizePrefix(path), nil
}

// mountLabel is the metrics label of a mount path ("/" for the root).
func mountLabel(path string) string {
	if path == "" {
		return "/"
	}
	return path
}

type urlMapEntry struct {
	domain string // "" for any host; "host" or "host:port"
	path   string // normalized prefix, "" for the root
	app    http.Handler
}

type urlMap struct {
	entries  []urlMapEntry
	domains  bool // whether any entry has a domain
	notFound http.Handler
}

func (m *urlMap) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if e, ok := m.match(r); ok {
		// Count the request under its mount (egg:paster#metrics).
		observe.SetApp(r.Context(), mountLabel(ScriptName(r)+e.path))
		e.app.ServeHTTP(w, mount(r, e.path, ScriptName(r)+e.path))
		return
	}
	m.notFound.ServeHTTP(w, r)
}

// ObserveRejected passes a request the server answered itself to the app
// it would have gone to (runner.RejectObserver), so that it is counted
// under that mount and logged by a translogger inside it.
func (m *urlMap) ObserveRejected(r *http.Request, code int) {
	if e, ok := m.match(r); ok {
		observe.SetApp(r.Context(), mountLabel(ScriptName(r)+e.path))
		runner.ObserveRejected(e.app, mount(r, e.path, ScriptName(r)+e.path), code)
		return
	}
	runner.ObserveRejected(m.notFound, r, code)
}

// match returns the entry r goes to.
func (m *urlMap) match(r *http.Request) (urlMapEntry, bool) {
	var host, hostPort string
	if m.domains {
		host = strings.ToLower(r.Host)
		port := ""
		if h, p, err := net.SplitHostPort(host); err == nil {
			host, port = h, p
		}
		if port == "" {
			port = "80"
			if Scheme(r) == "https" {
				port = "443"
			}
		}
		hostPort = host + ":" + port
	}
	for _, e := range m.entries {
		if e.domain != "" && e.domain != host && e.domain != hostPort {
			continue
		}
		if _, ok := matchPrefix(r.URL.Path, e.path); ok {
			return e, true
		}
	}
	return urlMapEntry{}, false
}

func notFound(w http.ResponseWriter, r *http.Request) {
	http.Error(w, "404 Not Found: nothing is mounted at this path", http.StatusNotFound)
}
