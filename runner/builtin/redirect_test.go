package builtin

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// rawRequest sends head (a request line and headers, without the final
// blank line) on a new connection to addr exactly as written, and returns
// the response with its body read. Go's clients clean paths, so tests of
// what a hostile client sends write the request by hand.
func rawRequest(t *testing.T, addr, head string) (*http.Response, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, head+"\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("%q: %v", head, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// rawGet is rawRequest for "GET target" with a Host and Connection: close.
func rawGet(t *testing.T, addr, target string) (*http.Response, string) {
	t.Helper()
	return rawRequest(t, addr, "GET "+target+" HTTP/1.1\r\nHost: site.example\r\nConnection: close")
}

// offSite reports why a Location a browser would follow leaves the site,
// or "" when it stays on it: it must be a path starting with a single
// slash, with browsers' reading of a backslash as a slash.
func offSite(loc string) string {
	l := strings.ReplaceAll(loc, `\`, "/")
	if !strings.HasPrefix(l, "/") || strings.HasPrefix(l, "//") {
		return "not a path with a single leading slash"
	}
	u, err := url.Parse(loc)
	if err != nil {
		return err.Error()
	}
	if u.Host != "" || u.Scheme != "" {
		return "has a host or scheme"
	}
	return ""
}

// TestNoOpenRedirect: no request path makes any mount kind redirect off the
// site (issue 8.4; static answered GET //evil.example/.. with Location:
// //evil.example/../).
func TestNoOpenRedirect(t *testing.T) {
	t.Parallel()
	dir, _ := staticTree(t)
	newStatic := func() http.Handler {
		h, err := staticFactory(map[string]string{"here": dir}, localOf("document_root", "root"))
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	pp, err := pprofFactory(nil, localOf())
	if err != nil {
		t.Fatal(err)
	}
	rootMap := mounted(t, map[string]http.Handler{"/": newStatic(), "/debug/pprof": pp})
	subMap := mounted(t, map[string]http.Handler{"/static": newStatic()})
	casc, err := cascadeFactory(&fakeLoader{apps: map[string]http.Handler{"none": http.NotFoundHandler(), "s": newStatic()}}, nil,
		localOf("app1", "none", "app2", "s"))
	if err != nil {
		t.Fatal(err)
	}
	pre, err := prefixFactory(newStatic(), nil, localOf("prefix", "/app"))
	if err != nil {
		t.Fatal(err)
	}
	mounts := []struct {
		name   string
		h      http.Handler
		prefix string // where the static files are
	}{
		{"static", newStatic(), ""},
		{"urlmap root", rootMap, ""},
		{"urlmap /static", subMap, "/static"},
		{"cascade", casc, ""},
		{"prefix /app", pre, "/app"},
	}
	hostile := []string{
		"//evil.example/..",
		"//evil.example/../",
		"//evil.example/%2e%2e",
		"///evil.example/..",
		"//evil.example/..?next=/x",
		"//evil.example/sub",
		"/\\evil.example/..",
		"/\\/evil.example/..",
		"/%5cevil.example/..",
		"/%2f%2fevil.example/..",
		"/%2F%2Fevil.example/..?a=1",
		"/%2f%2fevil.example/sub",
		"/%5c%5cevil.example/..",
		"/.//evil.example/..",
		"/sub/..//evil.example/..",
	}
	for _, m := range mounts {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			addr := start(t, m.h).Listener.Addr().String()
			targets := []string{m.prefix + "/sub", m.prefix + "/debug/pprof"}
			for _, h := range hostile {
				targets = append(targets, m.prefix+h)
			}
			for _, target := range targets {
				resp, _ := rawGet(t, addr, target)
				loc := resp.Header.Get("Location")
				if loc == "" {
					continue
				}
				if why := offSite(loc); why != "" {
					t.Errorf("GET %s: %d Location %q: %s", target, resp.StatusCode, loc, why)
				}
			}
			// The ordinary redirect still works.
			if resp, _ := rawGet(t, addr, m.prefix+"/sub?a=1"); resp.StatusCode != 301 || resp.Header.Get("Location") != m.prefix+"/sub/?a=1" {
				t.Errorf("GET %s/sub?a=1: %d Location %q, want 301 %s/sub/?a=1", m.prefix, resp.StatusCode, resp.Header.Get("Location"), m.prefix)
			}
		})
	}
}
