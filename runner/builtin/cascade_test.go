package builtin

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// statusApp reads the whole body and answers code with "NAME:BODY".
func statusApp(name string, code int) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, name+": "+err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("X-From", name)
		w.WriteHeader(code)
		fmt.Fprintf(w, "%s:%s", name, b)
	})
}

func TestCascade(t *testing.T) {
	t.Parallel()
	l := &fakeLoader{apps: map[string]http.Handler{
		"nf": statusApp("nf", 404), "ok": statusApp("ok", 200), "err": statusApp("err", 500),
		"gone": statusApp("gone", 410),
		"half": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { // reads 3 bytes, then 404
			io.ReadFull(r.Body, make([]byte, 3))
			http.NotFound(w, r)
		}),
		"silent": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}), // implicit 200
	}}
	tests := []struct {
		name   string
		local  []string
		status int
		body   string
	}{
		{"first 404 falls through, body replayed", []string{"app1", "nf", "app2", "ok"}, 200, "ok:hello"},
		{"partly read body replayed", []string{"app1", "half", "app2", "ok"}, 200, "ok:hello"},
		{"three apps", []string{"app1", "nf", "app2", "nf", "app3", "ok"}, 200, "ok:hello"},
		{"500 not caught by default", []string{"app1", "err", "app2", "ok"}, 500, "err:hello"},
		{"catch list", []string{"catch", "404 500", "app1", "err", "app2", "nf", "app3", "ok"}, 200, "ok:hello"},
		{"final app passes whatever it says", []string{"app1", "nf", "app2", "gone"}, 410, "gone:hello"},
		{"implicit 200 stops the cascade", []string{"app1", "silent", "app2", "ok"}, 200, ""},
		{"keys sorted as strings: app10 before app2", []string{"app2", "nf", "app10", "ok"}, 200, "ok:hello"},
		{"single app", []string{"app", "nf"}, 404, "nf:hello"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h, err := cascadeFactory(l, nil, localOf(tt.local...))
			if err != nil {
				t.Fatal(err)
			}
			srv := start(t, h)
			for _, chunked := range []bool{false, true} {
				var body io.Reader = strings.NewReader("hello")
				if chunked {
					body = struct{ io.Reader }{body}
				}
				status, got, hdr := do(t, nil, newRequest(t, "POST", srv.URL, body))
				if status != tt.status || got != tt.body {
					t.Errorf("chunked=%v: got %d %q, want %d %q", chunked, status, got, tt.status, tt.body)
				}
				if from := hdr.Get("X-From"); from != "" && !strings.HasPrefix(tt.body, from+":") {
					t.Errorf("header X-From %q leaked from a caught response", from)
				}
			}
		})
	}
}

func TestCascadeOrderIsPastes(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var order []string
	rec := func(name string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			order = append(order, name)
			mu.Unlock()
			http.NotFound(w, r)
		})
	}
	l := &fakeLoader{apps: map[string]http.Handler{"a": rec("a"), "b": rec("b"), "c": rec("c")}}
	h, err := cascadeFactory(l, nil, localOf("app2", "b", "app10", "c", "app1", "a"))
	if err != nil {
		t.Fatal(err)
	}
	do(t, nil, newRequest(t, "GET", start(t, h).URL, nil))
	mu.Lock()
	defer mu.Unlock()
	if got := strings.Join(order, ","); got != "a,c,b" {
		t.Errorf("apps tried in order %s, want a,c,b (app1, app10, app2)", got)
	}
}

func TestCascadeReplayLimit(t *testing.T) {
	t.Parallel()
	l := &fakeLoader{apps: map[string]http.Handler{"nf": statusApp("nf", 404), "ok": statusApp("ok", 200)}}
	h, err := cascadeFactory(l, nil, localOf("app1", "nf", "app2", "ok"))
	if err != nil {
		t.Fatal(err)
	}
	h.(*cascade).maxReplay = 4
	srv := start(t, h)
	status, body, _ := do(t, nil, newRequest(t, "POST", srv.URL, strings.NewReader("12345")))
	if status != 413 || !strings.Contains(body, "over 4 bytes") {
		t.Errorf("body over the replay limit: %d %q, want 413", status, body)
	}
	status, body, _ = do(t, nil, newRequest(t, "POST", srv.URL, strings.NewReader("1234")))
	if status != 200 || body != "ok:1234" {
		t.Errorf("body at the replay limit: %d %q", status, body)
	}
}

// TestCascadeFinalAppStreams: the last app's flushes reach the client while
// it is still running.
func TestCascadeFinalAppStreams(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	l := &fakeLoader{apps: map[string]http.Handler{
		"nf": statusApp("nf", 404),
		"stream": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "first\n")
			w.(http.Flusher).Flush()
			<-release
			io.WriteString(w, "second\n")
		}),
	}}
	h, err := cascadeFactory(l, nil, localOf("app1", "nf", "app2", "stream"))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(start(t, h).URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if line, err := br.ReadString('\n'); err != nil || line != "first\n" {
		t.Fatalf("first line %q, %v", line, err)
	}
	close(release)
	if rest, _ := io.ReadAll(br); string(rest) != "second\n" {
		t.Errorf("rest %q", rest)
	}
}

func TestCascadeErrors(t *testing.T) {
	t.Parallel()
	l := &fakeLoader{apps: map[string]http.Handler{"ok": statusApp("ok", 200)}}
	tests := []struct {
		local    []string
		key, err string
	}{
		{[]string{"app1", "ok", "other", "x"}, "other", `bad configuration key "other"`},
		{[]string{"app1", "ok", "catch", "404 nope"}, "catch", `bad status code "nope"`},
		{[]string{"app1", "missing"}, "app1", `no app "missing"`},
	}
	for _, tt := range tests {
		_, err := cascadeFactory(l, nil, localOf(tt.local...))
		wantErr(t, err, tt.key, tt.err)
	}
	if _, err := cascadeFactory(l, nil, localOf("catch", "404")); err == nil || !strings.Contains(err.Error(), "no apps") {
		t.Errorf("cascade without apps: %v", err)
	}
}
