package plugins

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// stderrTail keeps the last lines a plugin process wrote to its stderr
// while it starts, so that a start failure can show them: a binary that
// exits at start usually says why there. A Go program that crashes says why
// on the first line of its crash report ("panic: ...", "fatal error: ...")
// and ends with a stack trace, so the first such line is kept too. It stops
// recording (and costs nothing more) once the start has succeeded.
type stderrTail struct {
	mu      sync.Mutex
	lines   []string
	partial []byte
	crash   string // the first line of a Go crash report, if any
	crashAt int    // lines pushed before it
	pushed  int
	off     bool
}

const (
	tailLines    = 10
	tailLineSize = 500 // bytes kept of one line
)

func (t *stderrTail) Write(b []byte) (int, error) {
	n := len(b)
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.off {
		return n, nil
	}
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			t.partial = appendCapped(t.partial, b)
			break
		}
		t.partial = appendCapped(t.partial, b[:i])
		t.push()
		b = b[i+1:]
	}
	return n, nil
}

func appendCapped(dst, b []byte) []byte {
	return append(dst, b[:min(len(b), max(0, tailLineSize-len(dst)))]...)
}

// push ends the partial line; t.mu is held.
func (t *stderrTail) push() {
	line := string(t.partial)
	if t.crash == "" && (strings.HasPrefix(line, "panic: ") || strings.HasPrefix(line, "fatal error: ")) {
		t.crash, t.crashAt = line, t.pushed
	}
	t.pushed++
	t.lines = append(t.lines, line)
	if len(t.lines) > tailLines {
		t.lines = t.lines[len(t.lines)-tailLines:]
	}
	t.partial = t.partial[:0]
}

// stop stops recording and drops what was recorded.
func (t *stderrTail) stop() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.off, t.lines, t.partial = true, nil, nil
}

// String returns the last lines, each indented on a line of its own after
// a newline, or "" when nothing non-blank was written.
func (t *stderrTail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	lines := t.lines
	if len(t.partial) > 0 {
		lines = append(lines[:len(lines):len(lines)], string(t.partial))
	}
	if strings.TrimSpace(strings.Join(lines, "")) == "" {
		return ""
	}
	if t.crash != "" && t.crashAt < t.pushed-len(t.lines) {
		// The crash line has left the tail.
		lines = append([]string{t.crash, "..."}, lines...)
	}
	return "; the last lines of its stderr:\n\t" + strings.Join(lines, "\n\t")
}

// exitDesc says how a plugin process ended by itself ("exited with status
// 3", "was killed by signal segmentation fault"), or "" when it did not run,
// still ran, or was killed by SIGKILL (most likely by the host, which stops
// a plugin that failed to start).
func exitDesc(ps *os.ProcessState) string {
	if ps == nil {
		return ""
	}
	ws, ok := ps.Sys().(syscall.WaitStatus)
	switch {
	case ps.Exited():
		return "exited with status " + strconv.Itoa(ps.ExitCode())
	case ok && ws.Signaled() && ws.Signal() != syscall.SIGKILL:
		return "was killed by signal " + ws.Signal().String()
	}
	return ""
}
