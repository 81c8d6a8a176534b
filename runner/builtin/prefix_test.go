package builtin

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestPrefix(t *testing.T) {
	t.Parallel()
	show := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "sn=%s path=%s host=%s remote=%s scheme=%s xff=%s",
			ScriptName(r), r.URL.Path, r.Host, r.RemoteAddr, Scheme(r), r.Header.Get("X-Forwarded-For"))
	})
	tests := []struct {
		name    string
		local   []string
		target  string
		headers map[string]string
		want    []string
	}{
		{"strip", []string{"prefix", "/app/"}, "/app/x/y", nil, []string{"sn=/app ", "path=/x/y ", "scheme=http "}},
		{"exact prefix", []string{"prefix", "/app"}, "/app", nil, []string{"sn=/app ", "path=/ "}},
		{"not on a boundary", []string{"prefix", "/app"}, "/apple", nil, []string{"sn=/app ", "path=/apple "}},
		{"default prefix", nil, "/x", nil, []string{"sn= ", "path=/x "}},
		{"forwarded", []string{"prefix", "/app", "trusted_proxies", "127.0.0.1, 10.0.0.0/8"}, "/app/x", map[string]string{
			"X-Forwarded-Host": "public.example, proxy.internal", "X-Forwarded-For": "203.0.113.9, 10.0.0.1",
			"X-Forwarded-Proto": "https",
		}, []string{"host=public.example ", "remote=203.0.113.9:0 ", "scheme=https ", "xff="}},
		{"forwarded server", nil, "/", map[string]string{"X-Forwarded-Server": "srv.example"}, []string{"host=srv.example "}},
		{"forwarded host beats server", nil, "/", map[string]string{"X-Forwarded-Server": "srv.example", "X-Forwarded-Host": "host.example"}, []string{"host=host.example "}},
		{"forwarded scheme beats proto", nil, "/", map[string]string{"X-Forwarded-Scheme": "HTTPS", "X-Forwarded-Proto": "http"}, []string{"scheme=https "}},
		{"translation off", []string{"translate_forwarded_server", "false"}, "/", map[string]string{"X-Forwarded-Host": "public.example", "X-Forwarded-For": "203.0.113.9"},
			[]string{"host=127.0.0.1:", "remote=127.0.0.1:", "xff=203.0.113.9"}},
		{"force port", []string{"force_port", "8443"}, "/", map[string]string{"X-Forwarded-Host": "public.example:80"}, []string{"host=public.example:8443 "}},
		{"force no port", []string{"force_port", ""}, "/", map[string]string{"X-Forwarded-Host": "public.example:80"}, []string{"host=public.example "}},
		{"forced scheme", []string{"scheme", "https"}, "/", map[string]string{"X-Forwarded-Proto": "http"}, []string{"scheme=https "}},
		// Only http and https are believed: another value, even from a
		// trusted proxy, leaves the scheme as it was (a scheme header that
		// is not one of them does not hide a good X-Forwarded-Proto).
		{"proto not http", nil, "/", map[string]string{"X-Forwarded-Proto": "javascript"}, []string{"scheme=http "}},
		{"proto with a space", nil, "/", map[string]string{"X-Forwarded-Proto": "https x"}, []string{"scheme=http "}},
		{"proto list, first bad", nil, "/", map[string]string{"X-Forwarded-Proto": "ftp, https"}, []string{"scheme=http "}},
		{"scheme not http", nil, "/", map[string]string{"X-Forwarded-Scheme": "data"}, []string{"scheme=http "}},
		{"scheme with a colon", nil, "/", map[string]string{"X-Forwarded-Scheme": "https:"}, []string{"scheme=http "}},
		{"bad scheme, good proto", nil, "/", map[string]string{"X-Forwarded-Scheme": "javascript", "X-Forwarded-Proto": "HTTPS"}, []string{"scheme=https "}},
		{"proto list, first good", nil, "/", map[string]string{"X-Forwarded-Proto": "https, http"}, []string{"scheme=https "}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h, err := prefixFactory(show, nil, localOf(tt.local...))
			if err != nil {
				t.Fatal(err)
			}
			req := newRequest(t, "GET", start(t, h).URL+tt.target, nil)
			for k, v := range tt.headers {
				req.Header.Set(k, v)
			}
			_, body, _ := do(t, nil, req)
			for _, want := range tt.want {
				if !strings.Contains(body, want) {
					t.Errorf("%q lacks %q", body, want)
				}
			}
		})
	}
	if _, err := prefixFactory(show, nil, localOf("translate_forwarded_server", "maybe")); err == nil ||
		!strings.Contains(err.Error(), "[composite:main] translate_forwarded_server:") {
		t.Errorf("bad bool: %v", err)
	}
	_, err := prefixFactory(show, nil, localOf("trusted_proxies", "10.0.0.0/8 10.0.0.0/33"))
	wantErr(t, err, "trusted_proxies", `"10.0.0.0/33" is neither a network`)
}

// TestScriptNameComposes: prefix outside, urlmap inside, urlmap inside that.
func TestScriptNameComposes(t *testing.T) {
	t.Parallel()
	inner := mounted(t, map[string]http.Handler{"/v1": whereApp("leaf")})
	outer := mounted(t, map[string]http.Handler{"/api": inner})
	h, err := prefixFactory(outer, nil, localOf("prefix", "/app"))
	if err != nil {
		t.Fatal(err)
	}
	_, body, _ := do(t, nil, newRequest(t, "GET", start(t, h).URL+"/app/api/v1/users/7", nil))
	if body != "leaf|/app/api/v1|/users/7|" {
		t.Errorf("got %q", body)
	}
}

func TestCutRawPath(t *testing.T) {
	t.Parallel()
	tests := []struct {
		raw, prefix, rest, want string
	}{
		{"", "/a", "/b", ""},
		{"/a/b%2Fc", "/a", "/b/c", "/b%2Fc"},
		{"/a%20b/c%2Fd", "/a b", "/c/d", "/c%2Fd"},
		{"/a/b%2Fc", "/a/b/c", "/", ""},
		{"/x%2Fy/z", "/x/y", "/z", ""}, // prefix ends inside an escape run: plain /z
	}
	for _, tt := range tests {
		if got := cutRawPath(tt.raw, tt.prefix, tt.rest); got != tt.want {
			t.Errorf("cutRawPath(%q, %q, %q) = %q, want %q", tt.raw, tt.prefix, tt.rest, got, tt.want)
		}
	}
	r := httptest.NewRequest("GET", "/static", nil)
	if !clientPathHasSlash(httptest.NewRequest("GET", "/static/", nil)) || clientPathHasSlash(mount(r, "/static", "/static")) {
		t.Error("clientPathHasSlash does not look at the request URI")
	}
}
