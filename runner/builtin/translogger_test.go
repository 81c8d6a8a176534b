package builtin

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/paster-dev/paster/internal/testsync"
)

func TestCompileLogFormat(t *testing.T) {
	t.Parallel()
	r, _ := http.NewRequest("GET", "http://example.com/p/a?q=1", nil)
	r.RequestURI = "/p/a?q=1"
	r.Proto = "HTTP/1.1"
	r.RemoteAddr = "192.0.2.1:5555"
	r.Host = "example.com"
	r.Header.Set("Referer", "http://ref/")
	r.Header.Set("User-Agent", `evil "agent"`)
	r.Header.Set("X-Req", "rq")
	r.SetBasicAuth("bob", "pw")
	e := &logEntry{r: r, start: time.Date(2000, 10, 10, 13, 55, 36, 0, time.FixedZone("", -7*3600)),
		dur: 1500 * time.Millisecond, status: 201, bytes: 42, header: http.Header{"X-Resp": {"rs"}}}
	tests := []struct {
		format, want, err string
	}{
		{format: FormatCombined, want: `192.0.2.1 - bob [10/Oct/2000:13:55:36 -0700] "GET /p/a?q=1 HTTP/1.1" 201 42 "http://ref/" "evil \"agent\""`},
		{format: FormatCommon, want: `192.0.2.1 - bob [10/Oct/2000:13:55:36 -0700] "GET /p/a?q=1 HTTP/1.1" 201 42`},
		{format: `%m %U%q %H %v %D %T %B %% %{X-Req}i %{X-Resp}o %{X-None}i`, want: `GET /p/a?q=1 HTTP/1.1 example.com 1500000 1 42 % rq rs -`},
		{format: `%(REMOTE_ADDR)s [%(time)s] "%(REQUEST_METHOD)s %(REQUEST_URI)s %(HTTP_VERSION)s" %(status)s %(bytes)s "%(HTTP_REFERER)s" %(HTTP_X_REQ)s`,
			want: `192.0.2.1 [10/Oct/2000:13:55:36 -0700] "GET /p/a?q=1 HTTP/1.1" 201 42 "http://ref/" rq`},
		{format: "%z", err: "unknown directive %z at 0"},
		{format: "ab %(NOPE)s", err: "unknown field %(NOPE)s at 3"},
		{format: "%{X}z", err: "want i or o"},
		{format: "%(REMOTE_ADDR", err: "not closed"},
		{format: "100%", err: "lone %"},
	}
	for _, tt := range tests {
		fields, err := compileLogFormat(tt.format)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%q: error %v, want %q", tt.format, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tt.format, err)
			continue
		}
		var b []byte
		for _, f := range fields {
			b = f(b, e)
		}
		if string(b) != tt.want {
			t.Errorf("%q:\n got %s\nwant %s", tt.format, b, tt.want)
		}
	}
}

func TestTransloggerOutputs(t *testing.T) {
	t.Parallel()
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusTeapot)
		w.Write([]byte("short and stout"))
	})
	combined := regexp.MustCompile(`^127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [-+]\d{4}\] "GET /tea\?x=1 HTTP/1\.1" 418 15 "http://from/" "tester"\n$`)
	tests := []struct {
		name  string
		local []string
		check func(t *testing.T, line string)
	}{
		{"combined", nil, func(t *testing.T, line string) {
			if !combined.MatchString(line) {
				t.Errorf("combined line %q", line)
			}
		}},
		{"json", []string{"format", "json"}, func(t *testing.T, line string) {
			var rec logRecord
			if err := json.Unmarshal([]byte(line), &rec); err != nil {
				t.Fatalf("%q: %v", line, err)
			}
			if rec.Status != 418 || rec.Bytes != 15 || rec.URI != "/tea?x=1" || rec.Method != "GET" ||
				rec.UserAgent != "tester" || rec.Referer != "http://from/" || rec.RemoteAddr != "127.0.0.1" {
				t.Errorf("json record %+v", rec)
			}
		}},
		{"template", []string{"format", "%>s %b %U"}, func(t *testing.T, line string) {
			if line != "418 15 /tea\n" {
				t.Errorf("template line %q", line)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			h, err := transloggerFactory(app, map[string]string{"here": dir}, localOf(append([]string{"output", "access.log"}, tt.local...)...))
			if err != nil {
				t.Fatal(err)
			}
			req := newRequest(t, "GET", start(t, h).URL+"/tea?x=1", nil)
			req.Header.Set("Referer", "http://from/")
			req.Header.Set("User-Agent", "tester")
			if status, _, _ := do(t, nil, req); status != 418 {
				t.Fatalf("status %d", status)
			}
			// The line is written before the handler returns, so before the
			// response is complete at the client.
			b, err := os.ReadFile(filepath.Join(dir, "access.log"))
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, string(b))
		})
	}
}

// TestTransloggerHclog swaps the default hclog logger, so it is not parallel.
func TestTransloggerHclog(t *testing.T) {
	var buf testsync.Buffer
	// hclog.Default, not SetDefault's result: that is nil when no default
	// was made yet, and restoring nil leaves Default() nil for later tests.
	old := hclog.Default()
	hclog.SetDefault(hclog.New(&hclog.LoggerOptions{Name: "paster", Output: &buf, Level: hclog.Trace}))
	defer hclog.SetDefault(old)
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("hi")) })
	tests := []struct {
		local []string
		want  []string
	}{
		{nil, []string{"[INFO]  paster.wsgi: 127.0.0.1 - - [", `"GET /x HTTP/1.1" 200 2`}},
		{[]string{"logger_name", "access", "logging_level", "WARNING"}, []string{"[WARN]  paster.access: 127.0.0.1"}},
		{[]string{"format", "json", "logging_level", "debug"}, []string{"[DEBUG] paster.wsgi: request: remote_addr=127.0.0.1", "status=200", "bytes=2", "uri=/x"}},
	}
	for _, tt := range tests {
		h, err := transloggerFactory(app, nil, localOf(tt.local...))
		if err != nil {
			t.Fatal(err)
		}
		do(t, nil, newRequest(t, "GET", start(t, h).URL+"/x", nil))
		out := buf.String()
		for _, want := range tt.want {
			if !strings.Contains(out, want) {
				t.Errorf("%v: log %q lacks %q", tt.local, out, want)
			}
		}
	}
	if _, err := transloggerFactory(app, nil, localOf("logging_level", "loud")); err == nil || !strings.Contains(err.Error(), "logging_level") {
		t.Errorf("bad level: %v", err)
	}
	if _, err := transloggerFactory(app, nil, localOf("format", "%Q")); err == nil || !strings.Contains(err.Error(), "[composite:main] format:") {
		t.Errorf("bad format: %v", err)
	}
	if _, err := transloggerFactory(app, nil, localOf("output", filepath.Join(t.TempDir(), "no", "such", "dir", "x.log"))); err == nil || !strings.Contains(err.Error(), "output:") {
		t.Errorf("bad output: %v", err)
	}
}

// TestTransloggerHclogJSONEscapes: the json format without an output logs
// through hclog; with hclog's JSON format, a request's values that carry
// characters a log reader may take for a line break or a terminal control
// (NEL U+0085, the C1 CSI U+009B, U+202E) are written as \uXXXX escapes, as
// the json format's own output writes them, and read back unchanged. It
// swaps the default hclog logger, so it is not parallel.
func TestTransloggerHclogJSONEscapes(t *testing.T) {
	var buf testsync.Buffer
	old := hclog.Default()
	hclog.SetDefault(hclog.New(&hclog.LoggerOptions{Name: "paster", Output: &buf, Level: hclog.Trace, JSONFormat: true}))
	defer hclog.SetDefault(old)
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("hi")) })
	h, err := transloggerFactory(app, nil, localOf("format", "json"))
	if err != nil {
		t.Fatal(err)
	}
	head := "GET /a HTTP/1.1\r\nHost: h\r\nUser-Agent: ua\xc2\x85forged\xe2\x80\xae\r\nReferer: caf\u00e9\xc2\x9b[31m\r\nConnection: close"
	if resp, _ := rawRequest(t, start(t, h).Listener.Addr().String(), head); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	line := strings.TrimSpace(buf.String())
	for _, raw := range []string{"\u0085", "\u009b", "\u202e"} {
		if strings.Contains(line, raw) {
			t.Errorf("line %q holds %U raw", line, []rune(raw)[0])
		}
	}
	var rec map[string]any
	if err := json.Unmarshal([]byte(line), &rec); err != nil {
		t.Fatalf("%q: %v", line, err)
	}
	if rec["user_agent"] != "ua\u0085forged\u202e" || rec["referer"] != "café\u009b[31m" || rec["uri"] != "/a" {
		t.Errorf("record %v", rec)
	}
}

// TestTransloggerOutputSymlink: an output path that is a symbolic link is
// refused, naming the key and the path, and the file it points to is left
// alone: the app is loaded while paster may still be root, and a link
// planted in a directory others may write would make it append to any file.
func TestTransloggerOutputSymlink(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, []byte("precious\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, filepath.Join(dir, "access.log")); err != nil {
		t.Fatal(err)
	}
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})
	h, err := transloggerFactory(app, map[string]string{"here": dir}, localOf("output", "access.log"))
	if err == nil {
		h.(*translogger).Close()
		t.Fatal("an output that is a symbolic link was opened")
	}
	if want := "output: " + filepath.Join(dir, "access.log") + " is a symbolic link"; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q lacks %q", err, want)
	}
	if b, _ := os.ReadFile(victim); string(b) != "precious\n" {
		t.Errorf("the file the link names holds %q", b)
	}
}

// TestTransloggerEscapesNonASCII sends, on a real connection, a request
// whose target and headers carry bytes a log reader may take for a line
// break or a terminal control (U+2028, NEL U+0085, the C1 CSI U+009B) or
// that are not UTF-8 at all. The text formats write them as \xHH, as
// Apache and nginx do, so a line is printable ASCII; the JSON format
// writes non-printable characters as \uXXXX and stays valid JSON with the
// same values.
func TestTransloggerEscapesNonASCII(t *testing.T) {
	t.Parallel()
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("hi")) })
	head := "GET /a\xe2\x80\xa8b\xc2\x9b[31m HTTP/1.1\r\nHost: h\r\nUser-Agent: ua\xc2\x85forged\xff\r\nReferer: caf\u00e9\r\nConnection: close"
	tests := []struct {
		format string
		check  func(t *testing.T, line string)
	}{
		{"combined", func(t *testing.T, line string) {
			want := `"GET /a\xe2\x80\xa8b\xc2\x9b[31m HTTP/1.1" 200 2 "caf\xc3\xa9" "ua\xc2\x85forged\xff"`
			if !strings.Contains(line, want) {
				t.Errorf("line %q lacks %q", line, want)
			}
		}},
		{"%v %U", func(t *testing.T, line string) {
			if want := `h /a\xe2\x80\xa8b\xc2\x9b[31m`; line != want {
				t.Errorf("line %q, want %q", line, want)
			}
		}},
		{"json", func(t *testing.T, line string) {
			for _, want := range []string{`\u2028`, `\u009b`, `\u0085`, `"referer":"café"`} {
				if !strings.Contains(line, want) {
					t.Errorf("line %q lacks %q", line, want)
				}
			}
			var rec logRecord
			if err := json.Unmarshal([]byte(line), &rec); err != nil {
				t.Fatalf("%q: %v", line, err)
			}
			if rec.URI != "/a\u2028b\u009b[31m" || rec.UserAgent != "ua\u0085forged\ufffd" || rec.Host != "h" {
				t.Errorf("json record %+v", rec)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.format, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			h, err := transloggerFactory(app, map[string]string{"here": dir}, localOf("output", "access.log", "format", tt.format))
			if err != nil {
				t.Fatal(err)
			}
			if resp, _ := rawRequest(t, start(t, h).Listener.Addr().String(), head); resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			b, err := os.ReadFile(filepath.Join(dir, "access.log"))
			if err != nil {
				t.Fatal(err)
			}
			line, ok := strings.CutSuffix(string(b), "\n")
			if !ok {
				t.Fatalf("log %q does not end in a newline", b)
			}
			if tt.format != "json" {
				for i := 0; i < len(line); i++ {
					if c := line[i]; c < 0x20 || c > 0x7e {
						t.Fatalf("byte %#x at %d of %q is not printable ASCII", c, i, line)
					}
				}
			}
			tt.check(t, line)
		})
	}
}

// TestTransloggerLongFields: a request line and headers may be as long as
// max_header_bytes (1 MiB), and an escaped byte takes four: one request
// with a long User-Agent wrote a 4 MB access log line, a disk filled at
// four times the rate a client sends. Each field from the request is cut
// at 8 KiB, marked with "...".
func TestTransloggerLongFields(t *testing.T) {
	t.Parallel()
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("hi")) })
	path := "/" + strings.Repeat("p", 300<<10)
	ua := strings.Repeat("\xff", 300<<10)
	for _, format := range []string{"combined", "json", "%{X-Long}i"} {
		t.Run(format, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			h, err := transloggerFactory(app, map[string]string{"here": dir}, localOf("output", "access.log", "format", format))
			if err != nil {
				t.Fatal(err)
			}
			head := "GET " + path + " HTTP/1.1\r\nHost: h\r\nUser-Agent: " + ua + "\r\nX-Long: " + ua + "\r\nConnection: close"
			if resp, _ := rawRequest(t, start(t, h).Listener.Addr().String(), head); resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			b, err := os.ReadFile(filepath.Join(dir, "access.log"))
			if err != nil {
				t.Fatal(err)
			}
			if len(b) > 3*4*maxLogField {
				t.Errorf("a %d-byte request wrote a %d-byte log line", len(head), len(b))
			}
			if !strings.Contains(string(b), `...`) || !strings.Contains(string(b), strings.Repeat(map[bool]string{true: `\ufffd`, false: `\xff`}[format == "json"], 100)) {
				t.Errorf("log line %.200q... lacks the cut field", b)
			}
			if format == "json" {
				var rec logRecord
				if err := json.Unmarshal(b, &rec); err != nil {
					t.Fatalf("json line: %v", err)
				}
				if !strings.HasPrefix(rec.URI, "/ppp") || !strings.HasSuffix(rec.URI, "...") || len(rec.URI) > maxLogField+3 {
					t.Errorf("json uri of %d bytes: %.40q", len(rec.URI), rec.URI)
				}
			}
		})
	}
}
