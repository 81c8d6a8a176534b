package builtin

import (
	"net/http"
	"strings"
	"testing"
)

func TestParsePathExpression(t *testing.T) {
	t.Parallel()
	tests := []struct {
		expr, domain, path, err string
	}{
		{expr: "/", path: ""},
		{expr: "/api/", path: "/api"},
		{expr: "/api//", path: "/api"},
		{expr: "domain Example.COM /x", domain: "example.com", path: "/x"},
		{expr: "domain example.com port 8080 /", domain: "example.com:8080", path: ""},
		{expr: "port 8080 domain example.com /y", domain: "example.com:8080", path: "/y"},
		{expr: "domain example.com", domain: "example.com", path: ""},
		{expr: "api", err: "must start with /"},
		{expr: "/a /b", err: "more than one path"},
		{expr: "domain", err: "followed by a domain name"},
		{expr: "domain a domain b /", err: `"domain" given twice`},
		{expr: "port 80 /", err: "needs a domain"},
	}
	for _, tt := range tests {
		domain, path, err := parsePathExpression(tt.expr)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%q: error %v, want %q", tt.expr, err, tt.err)
			}
			continue
		}
		if err != nil || domain != tt.domain || path != tt.path {
			t.Errorf("%q = %q, %q, %v; want %q, %q", tt.expr, domain, path, err, tt.domain, tt.path)
		}
	}
}

func TestURLMapDispatch(t *testing.T) {
	t.Parallel()
	inner := mounted(t, map[string]http.Handler{"/b": whereApp("leaf")})
	l := &fakeLoader{apps: map[string]http.Handler{
		"root": whereApp("root"), "api": whereApp("api"), "v2": whereApp("v2"),
		"dom": whereApp("dom"), "special": whereApp("special"), "nested": inner,
	}}
	h, err := urlmapFactory(l, map[string]string{"here": "/etc/app"}, localOf(
		"/", "root",
		"/api", "api",
		"/api/v2/", "v2",
		"domain example.com /", "dom",
		"domain example.com port 8080 /special", "special",
		"/a", "nested",
	))
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range l.globals {
		if g["here"] != "/etc/app" {
			t.Errorf("app loaded with global %v, want the composite's", g)
		}
	}
	srv := start(t, h)
	tests := []struct {
		host, target, want string
	}{
		{"", "/", "root||/|"},
		{"", "/x/y", "root||/x/y|"},
		{"", "/apix", "root||/apix|"},
		{"", "/api", "api|/api|/|"},
		{"", "/api/", "api|/api|/|"},
		{"", "/api/users?id=1", "api|/api|/users|"},
		{"", "/api/v2", "v2|/api/v2|/|"},
		{"", "/api/v2/x", "v2|/api/v2|/x|"},
		{"", "/api/v20", "api|/api|/v20|"},
		{"", "/api/a%2Fb", "api|/api|/a/b|/a%2Fb"},
		{"", "/api/sp%20ace", "api|/api|/sp ace|"},
		{"", "/a/b/c", "leaf|/a/b|/c|"},
		{"", "/a/x", "root||/a/x|"}, // nested map has no entry: its 404
		{"example.com", "/x", "dom||/x|"},
		{"EXAMPLE.com:9090", "/special", "dom||/special|"},
		{"example.com:8080", "/special/y", "special|/special|/y|"},
		{"other.org", "/special", "root||/special|"},
	}
	for _, tt := range tests {
		req := newRequest(t, "GET", srv.URL+tt.target, nil)
		if tt.host != "" {
			req.Host = tt.host
		}
		status, body, _ := do(t, nil, req)
		if tt.target == "/a/x" {
			if status != 404 {
				t.Errorf("%s: status %d, want the nested map's 404", tt.target, status)
			}
			continue
		}
		if status != 200 || body != tt.want {
			t.Errorf("%s %s: %d %q, want %q", tt.host, tt.target, status, body, tt.want)
		}
	}
}

func TestURLMapNotFound(t *testing.T) {
	t.Parallel()
	l := &fakeLoader{apps: map[string]http.Handler{"api": whereApp("api"), "nf": whereApp("nf"), "gnf": whereApp("gnf")}}
	tests := []struct {
		name   string
		global map[string]string
		local  []string
		status int
		body   string
	}{
		{"default 404", nil, []string{"/api", "api"}, 404, "404 Not Found"},
		{"local not_found_app", map[string]string{"not_found_app": "gnf"}, []string{"/api", "api", "not_found_app", "nf"}, 200, "nf||/elsewhere|"},
		{"global not_found_app", map[string]string{"not_found_app": "gnf"}, []string{"/api", "api"}, 200, "gnf||/elsewhere|"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h, err := urlmapFactory(l, tt.global, localOf(tt.local...))
			if err != nil {
				t.Fatal(err)
			}
			status, body, _ := do(t, nil, newRequest(t, "GET", start(t, h).URL+"/elsewhere", nil))
			if status != tt.status || !strings.HasPrefix(body, tt.body) {
				t.Errorf("got %d %q, want %d %q", status, body, tt.status, tt.body)
			}
		})
	}
}

func TestURLMapErrors(t *testing.T) {
	t.Parallel()
	l := &fakeLoader{apps: map[string]http.Handler{"api": whereApp("api")}}
	tests := []struct {
		local    []string
		key, err string
	}{
		{[]string{"api", "api"}, "api", "must start with /"},
		{[]string{"/api", "api", "/api/", "api"}, "/api/", `same mount point as key "/api"`},
		{[]string{"/x", "missing"}, "/x", `no app "missing"`},
		{[]string{"/x", "api", "not_found_app", "missing"}, "not_found_app", `no app "missing"`},
	}
	for _, tt := range tests {
		_, err := urlmapFactory(l, nil, localOf(tt.local...))
		wantErr(t, err, tt.key, tt.err)
	}
}
