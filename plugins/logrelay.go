package plugins

import (
	"bytes"
	"encoding/json"
	"io"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/time/rate"
)

// Defaults of the relay of a plugin's output to the host's log.
const (
	// DefaultLogRate is HostOptions.LogRate's default, in lines per second.
	DefaultLogRate = 1000
	// MaxLogLine is the longest line relayed; the rest of a longer line is
	// dropped and the line ends with a marker saying how much.
	MaxLogLine = 16 << 10
)

// logRelay passes what one plugin binary writes (its hclog JSON lines on
// stderr, and anything else on stdout or stderr) to the host's logger, for
// every process of the binary. It is rate-limited, because a plugin writing
// as fast as it can would otherwise spend a host core and fill the host's
// log: a token bucket (LogRate lines per second, bursts of as many) where a
// line costs one token plus one per KiB, so long lines count for what they
// weigh. Lines over the limit are dropped and counted, and a warning says
// how many, at most once a second.
type logRelay struct {
	log     hclog.Logger
	limit   *rate.Limiter // nil: no limit
	dropped atomic.Uint64

	mu       sync.Mutex
	pending  uint64 // dropped and not yet reported
	reporter *time.Timer
}

// setRate changes the limit (lines per second; 0 or less: none).
func (r *logRelay) setRate(perSecond int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case perSecond <= 0:
		r.limit = nil
	case r.limit == nil:
		r.limit = rate.NewLimiter(rate.Limit(perSecond), perSecond)
	default:
		r.limit.SetLimit(rate.Limit(perSecond))
		r.limit.SetBurst(perSecond)
	}
}

// allow takes the tokens for a line of n bytes, or counts it dropped.
func (r *logRelay) allow(n int) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.limit == nil || r.limit.AllowN(time.Now(), 1+n>>10) {
		return true
	}
	r.dropped.Add(1)
	r.pending++
	if r.reporter == nil {
		r.reporter = time.AfterFunc(time.Second, r.report)
	}
	return false
}

// report logs how many lines were dropped since the last report.
func (r *logRelay) report() {
	r.mu.Lock()
	n := r.pending
	r.pending, r.reporter = 0, nil
	r.mu.Unlock()
	if n > 0 {
		r.log.Warn("plugin output over the log rate limit: lines dropped", "dropped", n, "total_dropped", r.dropped.Load())
	}
}

// stop ends a pending report, logging it now.
func (r *logRelay) stop() {
	r.mu.Lock()
	t := r.reporter
	r.mu.Unlock()
	if t != nil && t.Stop() {
		r.report()
	}
}

// writer returns the writer for one stream of one process: lines of plain
// text are logged at level with stream=NAME; with hclogJSON, lines that are
// hclog JSON (the SDK's logger) are logged at their own level with their
// own arguments, and other lines as go-plugin would (a [LEVEL] prefix, a
// panic at error level).
func (r *logRelay) writer(stream string, level hclog.Level, hclogJSON bool) io.Writer {
	return &relayWriter{r: r, stream: stream, level: level, json: hclogJSON}
}

// relayWriter cuts one stream into lines.
type relayWriter struct {
	r      *logRelay
	stream string
	level  hclog.Level
	json   bool

	mu      sync.Mutex
	buf     []byte
	cut     int  // bytes of the current line dropped past MaxLogLine
	inPanic bool // a Go panic began: plain lines are errors
}

func (w *relayWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := len(b)
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		part := b
		if i >= 0 {
			part = b[:i]
		}
		room := MaxLogLine - len(w.buf)
		if len(part) > room {
			w.cut += len(part) - room
			part = part[:room]
		}
		w.buf = append(w.buf, part...)
		if i < 0 {
			break
		}
		w.line()
		b = b[i+1:]
	}
	return n, nil
}

// line relays the line in w.buf and empties it; w.mu is held.
func (w *relayWriter) line() {
	line, cut := w.buf, w.cut
	w.buf, w.cut = w.buf[:0], 0
	if !w.r.allow(len(line)) {
		return
	}
	var trunc []any
	if cut > 0 {
		trunc = []any{"truncated_bytes", cut}
	}
	if w.json && len(line) > 0 && line[0] == '{' {
		if level, msg, log, args, ok := parseHCLog(w.r.log, line); ok {
			log.Log(level, msg, append(args, trunc...)...)
			return
		}
	}
	s := strings.TrimRight(string(line), "\r")
	level := w.level
	if w.json {
		level = w.plainLevel(s)
	}
	w.r.log.Log(level, s, append([]any{"stream", w.stream}, trunc...)...)
}

// plainLevel is the level of a plain line on the stderr that carries the
// SDK's JSON logs: what was written before Serve, or a crash.
func (w *relayWriter) plainLevel(s string) hclog.Level {
	for _, l := range []hclog.Level{hclog.Trace, hclog.Debug, hclog.Info, hclog.Warn, hclog.Error} {
		if strings.HasPrefix(s, "["+strings.ToUpper(l.String())+"]") {
			return l
		}
	}
	if strings.HasPrefix(s, "panic: ") || strings.HasPrefix(s, "fatal error: ") {
		w.inPanic = true
	}
	if w.inPanic {
		return hclog.Error
	}
	return w.level
}

// parseHCLog reads one line of hclog JSON: its level, message, logger (log
// named after its @module) and arguments, sorted by key. Numbers keep their
// digits (hclog would print a float64 1e+10); the plugin's @timestamp is
// dropped, the host's logger stamps the line. ok is false for a line that
// is not an hclog JSON object.
func parseHCLog(log hclog.Logger, line []byte) (level hclog.Level, msg string, named hclog.Logger, args []any, ok bool) {
	d := json.NewDecoder(bytes.NewReader(line))
	d.UseNumber()
	var m map[string]any
	if d.Decode(&m) != nil {
		return 0, "", nil, nil, false
	}
	msg, ok = m["@message"].(string)
	lv, _ := m["@level"].(string)
	if !ok || lv == "" {
		return 0, "", nil, nil, false
	}
	level = hclog.LevelFromString(lv)
	if level == hclog.NoLevel {
		level = hclog.Info
	}
	named = log
	if mod, _ := m["@module"].(string); mod != "" {
		named = log.Named(mod)
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		switch k {
		case "@message", "@level", "@module", "@timestamp":
		default:
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	args = make([]any, 0, 2*len(keys))
	for _, k := range keys {
		args = append(args, k, m[k])
	}
	return level, msg, named, args, true
}
