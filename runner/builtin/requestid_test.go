package builtin

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRequestID: egg:paster#request_id keeps a valid incoming ID, replaces
// an invalid one and makes one when there is none; the app sees it in the
// request header, the client in the response header, and the access log
// in %L, %(REQUEST_ID)s and JSON's request_id, with the translogger
// outside the filter or inside it (issue 13.7).
func TestRequestID(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("a", maxRequestIDLen)
	tests := []struct {
		name   string
		header string   // the filter's header key; "" for the default
		sent   []string // header lines sent
		keep   bool     // the sent ID is kept
	}{
		{name: "absent"},
		{name: "valid", sent: []string{"abc-123_X.y:z+/=@"}, keep: true},
		{name: "longest", sent: []string{long}, keep: true},
		{name: "too long", sent: []string{long + "a"}},
		{name: "space", sent: []string{"a b"}},
		{name: "quote", sent: []string{`a"b`}},
		{name: "log forging", sent: []string{"a\\x0aforged"}},
		{name: "non-ascii", sent: []string{"é"}},
		{name: "two lines", sent: []string{"a", "b"}},
		{name: "empty", sent: []string{""}},
		{name: "custom header", header: "X-Correlation-Id", sent: []string{"corr-1"}, keep: true},
		{name: "custom header absent", header: "x-correlation-id"},
	}
	for _, tt := range tests {
		for _, logOutside := range []bool{true, false} {
			t.Run(tt.name+map[bool]string{true: " (log outside)", false: " (log inside)"}[logOutside], func(t *testing.T) {
				t.Parallel()
				header := tt.header
				if header == "" {
					header = "X-Request-ID"
				}
				dir := t.TempDir()
				logFile, jsonFile := filepath.Join(dir, "access.log"), filepath.Join(dir, "access.json")
				app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					w.Write([]byte(strings.Join(r.Header.Values(header), "|") + "|" + RequestID(r)))
				})
				wrapID := func(next http.Handler) http.Handler {
					local := []string{}
					if tt.header != "" {
						local = append(local, "header", tt.header)
					}
					h, err := requestIDFactory(next, nil, localOf(local...))
					if err != nil {
						t.Fatal(err)
					}
					return h
				}
				wrapLog := func(next http.Handler) http.Handler {
					h, err := transloggerFactory(next, nil, localOf("format", "%L %(REQUEST_ID)s %>s", "output", logFile))
					if err != nil {
						t.Fatal(err)
					}
					h, err = transloggerFactory(h, nil, localOf("format", "json", "output", jsonFile))
					if err != nil {
						t.Fatal(err)
					}
					return h
				}
				var h http.Handler
				if logOutside {
					h = wrapLog(wrapID(app))
				} else {
					h = wrapID(wrapLog(app))
				}
				req := newRequest(t, "GET", start(t, h).URL, nil)
				for _, v := range tt.sent {
					req.Header.Add(header, v)
				}
				status, body, hdr := do(t, nil, req)
				id := hdr.Get(header)
				if status != 200 || len(hdr.Values(header)) != 1 {
					t.Fatalf("%d, response %s: %q", status, header, hdr.Values(header))
				}
				switch {
				case tt.keep && id != tt.sent[0]:
					t.Errorf("ID %q, want the one sent, %q", id, tt.sent[0])
				case !tt.keep && (len(id) != 26 || !validRequestID(id) || (len(tt.sent) > 0 && id == tt.sent[0])):
					t.Errorf("ID %q, want a new one of 26 characters", id)
				}
				if body != id+"|"+id {
					t.Errorf("the app saw %q, want %q", body, id+"|"+id)
				}
				b, err := os.ReadFile(logFile)
				if err != nil {
					t.Fatal(err)
				}
				if got := strings.TrimSpace(string(b)); got != id+" "+id+" 200" {
					t.Errorf("access log %q, want %q", got, id+" "+id+" 200")
				}
				b, err = os.ReadFile(jsonFile)
				if err != nil {
					t.Fatal(err)
				}
				var rec logRecord
				if err := json.Unmarshal(b, &rec); err != nil || rec.RequestID != id {
					t.Errorf("JSON access log %s: request_id %q, want %q (%v)", b, rec.RequestID, id, err)
				}
			})
		}
	}

	// Two requests without an ID get different ones; without the filter
	// the log shows -.
	h, err := requestIDFactory(http.NotFoundHandler(), nil, localOf())
	if err != nil {
		t.Fatal(err)
	}
	srv := start(t, h)
	_, _, h1 := do(t, nil, newRequest(t, "GET", srv.URL, nil))
	_, _, h2 := do(t, nil, newRequest(t, "GET", srv.URL, nil))
	if h1.Get("X-Request-ID") == h2.Get("X-Request-ID") {
		t.Errorf("two requests share the ID %q", h1.Get("X-Request-ID"))
	}
	logFile := filepath.Join(t.TempDir(), "access.log")
	lg, err := transloggerFactory(http.NotFoundHandler(), nil, localOf("format", "%L", "output", logFile))
	if err != nil {
		t.Fatal(err)
	}
	do(t, nil, newRequest(t, "GET", start(t, lg).URL, nil))
	if b, _ := os.ReadFile(logFile); string(b) != "-\n" {
		t.Errorf("without the filter %%L logged %q, want -", b)
	}

	for _, bad := range []string{"", "X Request", "X-Id:", "Ünïcode"} {
		_, err := requestIDFactory(http.NotFoundHandler(), nil, localOf("header", bad))
		wantErr(t, err, "header", "not a header name")
	}
}

// TestRequestIDRejected: a request the server answers itself (431 for a
// header over max_header_bytes) still gets an ID in the access log.
func TestRequestIDRejected(t *testing.T) {
	t.Parallel()
	logFile := filepath.Join(t.TempDir(), "access.log")
	rid, err := requestIDFactory(http.NotFoundHandler(), nil, localOf())
	if err != nil {
		t.Fatal(err)
	}
	tl, err := transloggerFactory(rid, nil, localOf("format", "%L %>s", "output", logFile))
	if err != nil {
		t.Fatal(err)
	}
	addr := strings.TrimPrefix(serveHTTPWith(t, tl, "max_header_bytes", "4k"), "http://")
	resp, _ := rawRequest(t, addr, "GET / HTTP/1.1\r\nHost: a\r\nX-Big: "+strings.Repeat("x", 16<<10))
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("%d, want 431", resp.StatusCode)
	}
	// The line is written when the server is done with the connection:
	// poll for it.
	var b []byte
	for deadline := time.Now().Add(10 * time.Second); len(b) == 0 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		b, _ = os.ReadFile(logFile)
	}
	id, status, _ := strings.Cut(strings.TrimSpace(string(b)), " ")
	if status != "431" || len(id) != 26 || !validRequestID(id) {
		t.Errorf("access log %q, want a new ID and 431", b)
	}
}
