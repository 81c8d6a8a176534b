package builtin

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/hashicorp/go-hclog"

	"github.com/paster-dev/paster/entrypoints"
	"github.com/paster-dev/paster/runner"
)

// Access log formats that format may name.
const (
	FormatCombined = `%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-Agent}i"`
	FormatCommon   = `%h %l %u %t "%r" %>s %b`
)

// transloggerKeys are the local keys egg:paster#translogger reads (Keys);
// setup_console_handler and set_logger_level are Paste's, accepted and
// ignored.
var transloggerKeys = []string{"format", "logger_name", "logging_level", "output", "setup_console_handler", "set_logger_level"}

// transloggerFactory is egg:paster#translogger, Paste's TransLogger: one
// access log line per request, written when the app returns. Keys:
//
//	format         "combined" (default), "common", "json", or a template
//	logger_name    name of the hclog logger (default "wsgi")
//	logging_level  level of the lines: trace, debug, info (default), warn,
//	               error (Python's names such as WARNING are accepted)
//	output         where the lines go instead of hclog: stdout, stderr or a
//	               file path (appended to; relative to global "here"; not
//	               a symbolic link)
//
// A template mixes text with Apache's directives — %h %a (client address,
// ClientAddr: behind a prefix filter, the one it derived; - when unknown)
// %l (always -) %u (basic-auth user) %t ([time]) %r (request line) %s %>s
// (status) %b (bytes, - for none) %B (bytes) %D (microseconds) %T (seconds)
// %m %U %q %H (method, path, ?query, protocol) %v (Host) %L (the request
// ID egg:paster#request_id gave, - without one) %{Name}i (request header as
// the client sent it) %{Name}o (response header) %% — and Paste's %(NAME)s
// fields: REMOTE_ADDR, REMOTE_USER, time, REQUEST_METHOD, REQUEST_URI,
// HTTP_VERSION, status, bytes, HTTP_REFERER, HTTP_USER_AGENT, REQUEST_ID (as
// %L) and HTTP_* (a request header). The JSON form has request_id when
// there is one.
// In an INI file every % is written %%. With format = json, hclog gets the
// fields as key/value pairs and other outputs get one JSON object per line.
// Quotes, backslashes and every byte outside printable ASCII (UTF-8
// included) from the request are escaped, as \" \\ and \xHH, as Apache
// and nginx do; JSON lines written to output write characters outside
// ASCII that are not printable as \uXXXX. A value from the request longer
// than 8 KiB is cut there and ends with "...", so that a line stays short
// whatever the client sends.
//
// setup_console_handler and set_logger_level are accepted for Paste
// compatibility and ignored (hclog's setup belongs to the command). Errors,
// naming the key: an unknown directive, an unknown level, an output file
// that cannot be opened or is a symbolic link.
//
// The writer the app gets keeps Flush, Hijack, ReadFrom (sendfile) and,
// through Unwrap, the http.ResponseController methods.
func transloggerFactory(next http.Handler, global map[string]string, local entrypoints.Local) (http.Handler, error) {
	warnUnknown("translogger", local, transloggerKeys)
	t := &translogger{next: next}
	format := local.Get("format")
	switch strings.TrimSpace(format) {
	case "", "combined":
		format = FormatCombined
	case "common":
		format = FormatCommon
	case "json":
		t.json = true
	}
	if !t.json {
		fields, err := compileLogFormat(format)
		if err != nil {
			return nil, local.Errorf("format", "%w", err)
		}
		t.fields = fields
	}

	level := hclog.Info
	if v := strings.TrimSpace(local.Get("logging_level")); v != "" {
		lv := strings.ToLower(v)
		level = hclog.LevelFromString(lv)
		if alias, ok := map[string]hclog.Level{"warning": hclog.Warn, "critical": hclog.Error, "fatal": hclog.Error}[lv]; ok {
			level = alias
		}
		if level == hclog.NoLevel {
			return nil, local.Errorf("logging_level", "unknown level %q (want trace, debug, info, warn or error)", v)
		}
	}
	t.level = level

	switch out := strings.TrimSpace(local.Get("output")); out {
	case "":
		name := strings.TrimSpace(local.Get("logger_name"))
		if name == "" {
			name = "wsgi"
		}
		t.logger = hclog.Default().Named(name)
	case "stdout":
		t.out = &lockedWriter{w: os.Stdout}
	case "stderr":
		t.out = &lockedWriter{w: os.Stderr}
	default:
		if !filepath.IsAbs(out) && global["here"] != "" {
			out = filepath.Join(global["here"], out)
		}
		// O_NOFOLLOW: the app may be loaded while paster is still root, and
		// a link planted where others may write would make it append to any
		// file.
		f, err := os.OpenFile(out, os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_NOFOLLOW, 0o644)
		if errors.Is(err, syscall.ELOOP) {
			return nil, local.Errorf("output", "%s is a symbolic link; paster does not write an access log through one (for standard output or error, say stdout or stderr)", out)
		}
		if err != nil {
			return nil, local.Errorf("output", "%w", err)
		}
		t.out = &lockedWriter{w: f}
		t.file = f
	}
	return t, nil
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) write(p []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.w.Write(p)
}

type translogger struct {
	next   http.Handler
	fields []logField
	json   bool
	level  hclog.Level
	logger hclog.Logger // when out is nil
	out    *lockedWriter
	file   *os.File // the output file it opened, nil for stdout, stderr, the logger
}

// Close closes the output file the translogger opened, if any (the loader's
// Session.Close calls it once the translogger's generation has drained).
// Lines of requests still running after that are lost, with the write
// error ignored.
func (t *translogger) Close() error {
	if t.file == nil {
		return nil
	}
	t.out.mu.Lock()
	defer t.out.mu.Unlock()
	return t.file.Close()
}

func (t *translogger) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// The slot lets a prefix filter inside tell the log who the client is.
	r, _ = withSlot(r)
	e := &logEntry{r: r, start: time.Now()}
	rw := &recordingWriter{}
	rw.ResponseWrapper = runner.WrapResponse(w, rw)
	defer func() {
		// Deferred so that a panicking app is logged too.
		e.dur = time.Since(e.start)
		e.status, e.bytes, e.header = rw.status, rw.bytes, w.Header()
		if e.status == 0 && !rw.hijacked {
			e.status = http.StatusOK
		}
		if c := runner.ReplacedStatus(w); c != 0 {
			e.status = c // the server replaced the response (body over max_body_bytes)
		}
		t.write(e)
	}()
	t.next.ServeHTTP(rw, r)
}

// ObserveRejected logs a request the server answered with code itself
// (runner.RejectObserver), after passing it on so that a prefix filter
// inside can name the client.
func (t *translogger) ObserveRejected(r *http.Request, code int) {
	r, _ = withSlot(r)
	runner.ObserveRejected(t.next, r, code)
	t.write(&logEntry{r: r, start: time.Now(), status: code, header: http.Header{}})
}

func (t *translogger) write(e *logEntry) {
	if t.json {
		rec := e.record()
		if t.out == nil {
			args := []any{"remote_addr", logString(rec.RemoteAddr), "user", logString(rec.User), "method", logString(rec.Method),
				"uri", logString(rec.URI), "proto", logString(rec.Proto), "status", rec.Status, "bytes", rec.Bytes, "referer", logString(rec.Referer),
				"user_agent", logString(rec.UserAgent), "host", logString(rec.Host), "duration_ms", rec.DurationMS}
			if rec.RequestID != "" {
				args = append(args, "request_id", logString(rec.RequestID))
			}
			t.logger.Log(t.level, "request", args...)
			return
		}
		j, _ := json.Marshal(rec)
		t.out.write(append(jsonPrintable(j), '\n'))
		return
	}
	b := make([]byte, 0, 256)
	for _, f := range t.fields {
		b = f(b, e)
	}
	if t.out == nil {
		t.logger.Log(t.level, string(b))
		return
	}
	t.out.write(append(b, '\n'))
}

// logEntry is what a log line is made of.
type logEntry struct {
	r      *http.Request
	start  time.Time
	dur    time.Duration
	status int
	bytes  int64
	header http.Header // the response's
}

// logRecord is the JSON form of a logEntry.
type logRecord struct {
	Time       string  `json:"time"`
	RemoteAddr string  `json:"remote_addr"`
	User       string  `json:"user,omitempty"`
	Method     string  `json:"method"`
	URI        string  `json:"uri"`
	Proto      string  `json:"proto"`
	Status     int     `json:"status"`
	Bytes      int64   `json:"bytes"`
	Referer    string  `json:"referer,omitempty"`
	UserAgent  string  `json:"user_agent,omitempty"`
	Host       string  `json:"host"`
	DurationMS float64 `json:"duration_ms"`
	RequestID  string  `json:"request_id,omitempty"`
}

func (e *logEntry) record() logRecord {
	return logRecord{
		Time:       e.start.Format(time.RFC3339Nano),
		RemoteAddr: e.remoteHost(),
		User:       clipped(e.user()),
		Method:     clipped(e.r.Method),
		URI:        clipped(e.requestURI()),
		Proto:      clipped(e.r.Proto),
		Status:     e.status,
		Bytes:      e.bytes,
		Referer:    clipped(e.r.Header.Get("Referer")),
		UserAgent:  clipped(e.r.Header.Get("User-Agent")),
		Host:       clipped(e.r.Host),
		DurationMS: float64(e.dur.Microseconds()) / 1000,
		RequestID:  RequestID(e.r),
	}
}

// remoteHost is the client's address, ClientAddr (so a prefix filter's
// derived address even when it stands inside this filter); "-" unknown.
func (e *logEntry) remoteHost() string {
	if a := ClientAddr(e.r); a.IsValid() {
		return a.String()
	}
	return "-"
}

func (e *logEntry) user() string {
	u, _, _ := e.r.BasicAuth()
	return u
}

// requestURI is the target as the client sent it (never rewritten by
// urlmap or prefix).
func (e *logEntry) requestURI() string {
	if e.r.RequestURI != "" {
		return e.r.RequestURI
	}
	return e.r.URL.RequestURI()
}

// logField appends one piece of a log line.
type logField func(b []byte, e *logEntry) []byte

func literal(s string) logField {
	return func(b []byte, _ *logEntry) []byte { return append(b, s...) }
}

func dashIfEmpty(b []byte, s string) []byte {
	if s == "" {
		return append(b, '-')
	}
	return appendEscaped(b, s)
}

// appendEscaped appends s with quotes and backslashes escaped by a
// backslash, and every byte outside printable ASCII (controls, DEL and
// all bytes from 0x80: UTF-8 too) written \xHH, as Apache and nginx do,
// so that a request cannot forge log lines: neither with a line break nor
// with what a log reader may take for one (NEL U+0085, U+2028) or a
// terminal for a control sequence (the C1 CSI U+009B). A value longer
// than maxLogField bytes is cut there and ends with "...".
func appendEscaped(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	s, cut := clipField(s)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20 || c >= 0x7f:
			b = append(b, '\\', 'x', hex[c>>4], hex[c&0xf])
		default:
			b = append(b, c)
		}
	}
	if cut {
		b = append(b, "..."...)
	}
	return b
}

// maxLogField is the most bytes of one value from the request that a log
// line carries (Apache's limit on a request line or header is 8190 bytes;
// paster's max_header_bytes allows 1 MiB, which escaped would be 4 MB).
const maxLogField = 8 << 10

// clipField returns s cut to maxLogField bytes, and whether it was cut.
func clipField(s string) (string, bool) {
	if len(s) <= maxLogField {
		return s, false
	}
	return s[:maxLogField], true
}

// clipped is s cut to maxLogField bytes and marked "..." when longer, for
// the JSON format (which escapes by itself).
func clipped(s string) string {
	if c, cut := clipField(s); cut {
		return c + "..."
	}
	return s
}

// logString is a request's value as the json format hands it to hclog
// (no output): hclog's JSON format (encoding/json) would leave the C1
// controls, NEL and format characters such as U+202E in it raw, so it
// marshals itself with jsonPrintable's escapes; hclog's text format takes
// String and quotes such characters itself.
type logString string

func (s logString) String() string { return string(s) }

// MarshalJSON is s as a JSON string, its non-printable characters
// escaped (jsonPrintable).
func (s logString) MarshalJSON() ([]byte, error) {
	j, err := json.Marshal(string(s))
	return jsonPrintable(j), err
}

// jsonPrintable returns j, the output of json.Marshal, with every
// character outside ASCII that is not printable (unicode.IsPrint: the C1
// controls, NEL, U+2028 and U+2029, format characters such as U+202E)
// written as a \uXXXX escape, so that a JSON log line carries nothing a
// log reader or terminal may act on. Outside strings JSON is ASCII, so
// the escapes land inside strings and the values are unchanged.
// encoding/json escapes only C0 controls, U+2028 and U+2029, and replaces
// invalid UTF-8 with U+FFFD. A j that needs no escape (any ASCII line) is
// returned as it is, not copied.
func jsonPrintable(j []byte) []byte {
	var b []byte // nil until a character needs an escape
	done := 0    // j[:done] is in b
	for i := 0; i < len(j); {
		if j[i] < utf8.RuneSelf {
			i++
			continue
		}
		r, n := utf8.DecodeRune(j[i:])
		if !unicode.IsPrint(r) {
			b = append(b, j[done:i]...)
			for _, u := range utf16.AppendRune(nil, r) {
				b = fmt.Appendf(b, `\u%04x`, u)
			}
			done = i + n
		}
		i += n
	}
	if b == nil {
		return j
	}
	return append(b, j[done:]...)
}

func apacheTime(t time.Time) string { return t.Format("02/Jan/2006:15:04:05 -0700") }

var apacheDirectives = map[byte]logField{
	'h': func(b []byte, e *logEntry) []byte { return appendEscaped(b, e.remoteHost()) },
	'a': func(b []byte, e *logEntry) []byte { return appendEscaped(b, e.remoteHost()) },
	'l': literal("-"),
	'u': func(b []byte, e *logEntry) []byte { return dashIfEmpty(b, e.user()) },
	't': func(b []byte, e *logEntry) []byte { return append(append(append(b, '['), apacheTime(e.start)...), ']') },
	'r': func(b []byte, e *logEntry) []byte {
		if e.r.Method == "" { // a request the server could not read
			return append(b, '-')
		}
		return appendEscaped(b, e.r.Method+" "+e.requestURI()+" "+e.r.Proto)
	},
	's': func(b []byte, e *logEntry) []byte {
		if e.status == 0 {
			return append(b, '-')
		}
		return strconv.AppendInt(b, int64(e.status), 10)
	},
	'b': func(b []byte, e *logEntry) []byte {
		if e.bytes == 0 {
			return append(b, '-')
		}
		return strconv.AppendInt(b, e.bytes, 10)
	},
	'B': func(b []byte, e *logEntry) []byte { return strconv.AppendInt(b, e.bytes, 10) },
	'D': func(b []byte, e *logEntry) []byte { return strconv.AppendInt(b, e.dur.Microseconds(), 10) },
	'T': func(b []byte, e *logEntry) []byte { return strconv.AppendInt(b, int64(e.dur/time.Second), 10) },
	'm': func(b []byte, e *logEntry) []byte { return appendEscaped(b, e.r.Method) },
	'U': func(b []byte, e *logEntry) []byte {
		uri := e.requestURI()
		if i := strings.IndexByte(uri, '?'); i >= 0 {
			uri = uri[:i]
		}
		return appendEscaped(b, uri)
	},
	'q': func(b []byte, e *logEntry) []byte {
		if e.r.URL.RawQuery == "" {
			return b
		}
		return appendEscaped(append(b, '?'), e.r.URL.RawQuery)
	},
	'H': func(b []byte, e *logEntry) []byte { return appendEscaped(b, e.r.Proto) },
	'v': func(b []byte, e *logEntry) []byte { return appendEscaped(b, e.r.Host) },
	'L': func(b []byte, e *logEntry) []byte { return dashIfEmpty(b, RequestID(e.r)) },
}

// pasteFields are TransLogger's %(NAME)s fields.
var pasteFields = map[string]logField{
	"REMOTE_ADDR":     apacheDirectives['h'],
	"REMOTE_USER":     apacheDirectives['u'],
	"time":            func(b []byte, e *logEntry) []byte { return append(b, apacheTime(e.start)...) },
	"REQUEST_METHOD":  apacheDirectives['m'],
	"REQUEST_URI":     func(b []byte, e *logEntry) []byte { return appendEscaped(b, e.requestURI()) },
	"HTTP_VERSION":    apacheDirectives['H'],
	"status":          apacheDirectives['s'],
	"bytes":           apacheDirectives['b'],
	"HTTP_REFERER":    requestHeader("Referer"),
	"HTTP_USER_AGENT": requestHeader("User-Agent"),
	"REQUEST_ID":      apacheDirectives['L'],
}

func requestHeader(name string) logField {
	return func(b []byte, e *logEntry) []byte { return dashIfEmpty(b, e.r.Header.Get(name)) }
}

func responseHeader(name string) logField {
	return func(b []byte, e *logEntry) []byte { return dashIfEmpty(b, e.header.Get(name)) }
}

// compileLogFormat turns a template into fields; an unknown directive is an
// error giving its position.
func compileLogFormat(format string) ([]logField, error) {
	var fields []logField
	var text strings.Builder
	flush := func() {
		if text.Len() > 0 {
			fields = append(fields, literal(text.String()))
			text.Reset()
		}
	}
	for i := 0; i < len(format); i++ {
		c := format[i]
		if c != '%' {
			text.WriteByte(c)
			continue
		}
		start := i
		i++
		if i >= len(format) {
			return nil, fmt.Errorf("format ends with a lone %% (at %d)", start)
		}
		switch c := format[i]; {
		case c == '%':
			text.WriteByte('%')
			continue
		case c == '(':
			end := strings.Index(format[i:], ")s")
			if end < 0 {
				return nil, fmt.Errorf("%%(NAME)s not closed at %d", start)
			}
			name := format[i+1 : i+end]
			f, ok := pasteFields[name]
			if !ok && strings.HasPrefix(name, "HTTP_") {
				f, ok = requestHeader(strings.ReplaceAll(strings.TrimPrefix(name, "HTTP_"), "_", "-")), true
			}
			if !ok {
				return nil, fmt.Errorf("unknown field %%(%s)s at %d", name, start)
			}
			flush()
			fields = append(fields, f)
			i += end + 1
		case c == '{':
			end := strings.IndexByte(format[i:], '}')
			if end < 0 || i+end+1 >= len(format) {
				return nil, fmt.Errorf("%%{NAME}i not closed at %d", start)
			}
			name := format[i+1 : i+end]
			kind := format[i+end+1]
			flush()
			switch kind {
			case 'i':
				fields = append(fields, requestHeader(name))
			case 'o':
				fields = append(fields, responseHeader(name))
			default:
				return nil, fmt.Errorf("unknown directive %%{%s}%c at %d (want i or o)", name, kind, start)
			}
			i += end + 1
		default:
			if c == '>' && i+1 < len(format) && format[i+1] == 's' {
				i++
				c = 's'
			}
			f, ok := apacheDirectives[c]
			if !ok {
				return nil, fmt.Errorf("unknown directive %%%c at %d", c, start)
			}
			flush()
			fields = append(fields, f)
		}
	}
	flush()
	return fields, nil
}

// recordingWriter notes the status and size of a response.
type recordingWriter struct {
	runner.ResponseWrapper
	status   int
	bytes    int64
	hijacked bool
}

func (w *recordingWriter) WriteHeader(code int) {
	if w.status == 0 && (code >= 200 || code == http.StatusSwitchingProtocols) {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *recordingWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}

// ReadFrom passes the copy to the wrapped writer's ReadFrom (sendfile).
func (w *recordingWriter) ReadFrom(src io.Reader) (int64, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	var n int64
	var err error
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(src)
	} else {
		n, err = io.Copy(struct{ io.Writer }{w.ResponseWriter}, src)
	}
	w.bytes += n
	return n, err
}

// BeforeFlush notes the 200 a flush sends (runner.ResponseHooks).
func (w *recordingWriter) BeforeFlush() (bool, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return true, nil
}

// Hijacked notes that the app took over the connection
// (runner.ResponseHooks).
func (w *recordingWriter) Hijacked() { w.hijacked = true }
