package builtin

import (
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
)

// TestCORS: egg:paster#cors answers preflights itself with 204 (the app is
// not called), adds the Access-Control-* headers for allowed origins only,
// and always varies on Origin (issue 13.7).
func TestCORS(t *testing.T) {
	t.Parallel()
	type want struct {
		status                                          int
		origin, methods, headers, creds, maxAge, expose string
		appCalled                                       bool
	}
	tests := []struct {
		name    string
		local   []string
		method  string
		headers []string
		want    want
	}{
		{"preflight allowed", []string{"origins", "https://a.example https://*.b.example", "methods", "get, put", "headers", "Content-Type X-Token", "credentials", "true", "max_age", "10m"},
			"OPTIONS", []string{"Origin", "https://a.example", "Access-Control-Request-Method", "PUT", "Access-Control-Request-Headers", "x-token"},
			want{status: 204, origin: "https://a.example", methods: "PUT", headers: "x-token", creds: "true", maxAge: "600"}},
		{"preflight wildcard subdomain", []string{"origins", "https://a.example https://*.b.example", "methods", "PUT"},
			"OPTIONS", []string{"Origin", "https://x.b.example", "Access-Control-Request-Method", "PUT"},
			want{status: 204, origin: "https://x.b.example", methods: "PUT"}},
		{"preflight other origin", []string{"origins", "https://a.example", "methods", "PUT"},
			"OPTIONS", []string{"Origin", "https://evil.example", "Access-Control-Request-Method", "PUT"},
			want{status: 204}},
		{"preflight method not allowed", []string{"origins", "https://a.example"},
			"OPTIONS", []string{"Origin", "https://a.example", "Access-Control-Request-Method", "DELETE"},
			want{status: 204}},
		{"preflight header not allowed", []string{"origins", "https://a.example", "headers", "X-Token"},
			"OPTIONS", []string{"Origin", "https://a.example", "Access-Control-Request-Method", "GET", "Access-Control-Request-Headers", "x-other"},
			want{status: 204}},
		{"preflight any header", []string{"origins", "https://a.example", "headers", "*"},
			"OPTIONS", []string{"Origin", "https://a.example", "Access-Control-Request-Method", "GET", "Access-Control-Request-Headers", "x-other"},
			want{status: 204, origin: "https://a.example", methods: "GET", headers: "x-other"}},
		{"preflight any origin", []string{"origins", "*"},
			"OPTIONS", []string{"Origin", "https://z.example", "Access-Control-Request-Method", "POST"},
			want{status: 204, origin: "*", methods: "POST"}},
		{"plain OPTIONS reaches the app", []string{"origins", "*"},
			"OPTIONS", []string{"Origin", "https://z.example"},
			want{status: 200, origin: "*", appCalled: true}},
		{"actual request allowed", []string{"origins", "https://a.example", "expose_headers", "X-Request-ID, X-Total", "credentials", "yes"},
			"GET", []string{"Origin", "https://a.example"},
			want{status: 200, origin: "https://a.example", creds: "true", expose: "X-Request-Id, X-Total", appCalled: true}},
		{"actual request other origin", []string{"origins", "https://a.example", "credentials", "yes"},
			"GET", []string{"Origin", "https://evil.example"},
			want{status: 200, appCalled: true}},
		{"actual request method not allowed", []string{"origins", "https://a.example", "methods", "GET"},
			"POST", []string{"Origin", "https://a.example"},
			want{status: 200, appCalled: true}},
		{"same-origin request without Origin", []string{"origins", "https://a.example"},
			"GET", nil,
			want{status: 200, appCalled: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var called atomic.Int32
			app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				called.Add(1)
				w.Write([]byte("app"))
			})
			h, err := corsFactory(app, nil, localOf(tt.local...))
			if err != nil {
				t.Fatal(err)
			}
			req := newRequest(t, tt.method, start(t, h).URL, nil)
			for i := 0; i+1 < len(tt.headers); i += 2 {
				req.Header.Set(tt.headers[i], tt.headers[i+1])
			}
			status, _, hdr := do(t, nil, req)
			w := tt.want
			if status != w.status {
				t.Errorf("status %d, want %d", status, w.status)
			}
			for _, c := range []struct{ name, want string }{
				{"Access-Control-Allow-Origin", w.origin},
				{"Access-Control-Allow-Methods", w.methods},
				{"Access-Control-Allow-Headers", w.headers},
				{"Access-Control-Allow-Credentials", w.creds},
				{"Access-Control-Max-Age", w.maxAge},
				{"Access-Control-Expose-Headers", w.expose},
			} {
				if got := hdr.Get(c.name); got != c.want {
					t.Errorf("%s %q, want %q", c.name, got, c.want)
				}
			}
			if !varyHas(hdr, "Origin") {
				t.Errorf("Vary %q lacks Origin", hdr.Values("Vary"))
			}
			if got := called.Load() == 1; got != w.appCalled {
				t.Errorf("app called: %v, want %v", got, w.appCalled)
			}
		})
	}
}

// TestCORSErrors: bad values fail at load, naming the key; credentials
// with origins = * is refused.
func TestCORSErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		local    []string
		key, err string
	}{
		{[]string{"origins", "https://a.example/"}, "origins", "trailing slash"},
		{[]string{"origins", "a.example"}, "origins", "not an origin"},
		{[]string{"origins", "https://a.example/path"}, "origins", "not an origin"},
		{[]string{"origins", "https://*.*.example"}, "origins", "more than one"},
		{[]string{"origins", "*", "credentials", "true"}, "credentials", "name the origins"},
		{[]string{"origins", "https://a.example *", "credentials", "true"}, "credentials", "name the origins"},
		{[]string{"origins", "*", "credentials", "sometimes"}, "credentials", "sometimes"},
		{[]string{"origins", "*", "methods", "GET P(OST"}, "methods", "not a method"},
		{[]string{"origins", "*", "headers", "X-A X:B"}, "headers", "not a header name"},
		{[]string{"origins", "*", "expose_headers", "*"}, "expose_headers", "not a header name"},
		{[]string{"origins", "*", "max_age", "forever"}, "max_age", "forever"},
		{[]string{"origins", "*", "max_age", "-1s"}, "max_age", "negative"},
		{[]string{"origins", " ", "methods", "GET"}, "origins", "required"},
	}
	for _, tt := range tests {
		_, err := corsFactory(http.NotFoundHandler(), nil, localOf(tt.local...))
		wantErr(t, err, tt.key, tt.err)
	}
	if _, err := corsFactory(http.NotFoundHandler(), nil, localOf("methods", "GET")); err == nil || !strings.Contains(err.Error(), "origins: required") {
		t.Errorf("no origins: %v", err)
	}
}
