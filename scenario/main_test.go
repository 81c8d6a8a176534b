// Package scenario holds paster's scenario tests: real paster processes
// serving INI files from testdata on real sockets, with the example plugins
// and a test plugin (testdata/paster-plugin-scentest) as real processes.
// TestMain builds them once into a temporary directory (paster finds the
// plugins in the plugins directory next to itself).
//
// The tests synchronise on what the processes say and answer (log lines,
// response bytes), never on sleeps; durations appear only as bounds after
// which a test fails instead of hanging.
package scenario

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/paster-dev/paster/internal/testsync"
)

// bounded is how long a test waits for something before it fails.
const bounded = 60 * time.Second

// bin is the directory holding paster and plugins/paster-plugin-*.
var bin string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "paster-scenario-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	bin = dir
	if err := build(dir); err != nil {
		fmt.Fprintln(os.Stderr, "scenario: building paster and plugins:", err)
		return 1
	}
	return m.Run()
}

// build compiles paster, the example plugins the tests use and the test
// plugin, without the race detector (the processes are under test through
// their behaviour; the test process itself may run with -race).
func build(dir string) error {
	root, err := filepath.Abs("..")
	if err != nil {
		return err
	}
	cmds := [][]string{
		{"go", "build", "-o", filepath.Join(dir, "paster"), "./cmd/paster"},
		{"go", "build", "-o", filepath.Join(dir, "plugins") + string(filepath.Separator),
			"./examples/chat/cmd/paster-plugin-chat",
			"./examples/waitapp/cmd/paster-plugin-waitapp",
			"./examples/upload/cmd/paster-plugin-upload",
			"./examples/wsecho/cmd/paster-plugin-wsecho",
			"./scenario/testdata/paster-plugin-scentest",
		},
		{"go", "build", "-o", filepath.Join(dir, "paster-benchhost"), "./scenario/testdata/paster-benchhost"},
	}
	if err := os.MkdirAll(filepath.Join(dir, "plugins"), 0o755); err != nil {
		return err
	}
	for _, c := range cmds {
		cmd := exec.Command(c[0], c[1:]...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %w\n%s", strings.Join(c, " "), err, out)
		}
	}
	return nil
}

// server is a running paster serve (or paster-benchhost) process.
type server struct {
	t    testing.TB
	cmd  *exec.Cmd
	log  *logLines
	addr string // host:port, once serving
	done chan struct{}
	err  error // of Wait, once done is closed
}

// serve starts "paster serve --log-level debug testdata/INI args..." and,
// unless noWait, waits until it logs that it serves. The process is
// stopped (SIGTERM, then SIGKILL) when the test ends.
func serve(t testing.TB, ini string, noWait bool, args ...string) *server {
	t.Helper()
	return start(t, "paster", noWait, append([]string{"serve", "--log-level", "debug", filepath.Join("testdata", ini)}, args...)...)
}

// start starts the program name of bin with args, as serve does.
func start(t testing.TB, name string, noWait bool, args ...string) *server {
	t.Helper()
	return startCmd(t, exec.Command(filepath.Join(bin, name), args...), noWait)
}

// startCmd starts cmd, as serve does.
func startCmd(t testing.TB, cmd *exec.Cmd, noWait bool) *server {
	t.Helper()
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	s := &server{t: t, cmd: cmd, log: newLogLines(), done: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go s.log.read(stderr)
	go func() {
		s.err = cmd.Wait()
		close(s.done)
	}()
	t.Cleanup(func() {
		select {
		case <-s.done:
		default:
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-s.done:
			case <-time.After(bounded):
				cmd.Process.Kill()
				<-s.done
			}
		}
		if t.Failed() {
			t.Logf("%s log:\n%s", strings.Join(cmd.Args, " "), s.log.String())
		}
	})
	if !noWait {
		s.waitServing()
	}
	return s
}

var servingRE = regexp.MustCompile(`\bserving:.*\baddr=([0-9.]+:[0-9]+)`)

func (s *server) waitServing() {
	s.t.Helper()
	m := s.waitLog(servingRE)
	s.addr = m[1]
}

// waitLog waits until a log line matches re and returns its submatches.
// It fails the test if the process exits or bounded passes first.
func (s *server) waitLog(re *regexp.Regexp) []string {
	s.t.Helper()
	m, err := s.log.wait(re, 0, s.done)
	if err != nil {
		s.t.Fatalf("waiting for log line /%s/: %v", re, err)
	}
	return m
}

// url returns the URL of path on the server.
func (s *server) url(path string) string { return "http://" + s.addr + path }

// stop sends SIGTERM and returns the exit code.
func (s *server) stop() int {
	s.t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		s.t.Fatal(err)
	}
	return s.wait()
}

// wait waits for the process to exit and returns its exit code.
func (s *server) wait() int {
	s.t.Helper()
	select {
	case <-s.done:
	case <-time.After(bounded):
		s.t.Fatalf("paster did not exit within %v", bounded)
	}
	return s.cmd.ProcessState.ExitCode()
}

// logLines collects a process's log lines and lets tests wait for one.
type logLines struct {
	mu      sync.Mutex
	lines   []string
	changed chan struct{}
	eof     bool
}

func newLogLines() *logLines { return &logLines{changed: make(chan struct{})} }

func (l *logLines) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		l.mu.Lock()
		l.lines = append(l.lines, sc.Text())
		close(l.changed)
		l.changed = make(chan struct{})
		l.mu.Unlock()
	}
	l.mu.Lock()
	l.eof = true
	close(l.changed)
	l.changed = make(chan struct{})
	l.mu.Unlock()
}

// wait returns the submatches of the first line from index from on that
// matches re.
func (l *logLines) wait(re *regexp.Regexp, from int, exited <-chan struct{}) ([]string, error) {
	timeout := time.NewTimer(bounded)
	defer timeout.Stop()
	for {
		l.mu.Lock()
		for _, line := range l.lines[from:] {
			if m := re.FindStringSubmatch(line); m != nil {
				l.mu.Unlock()
				return m, nil
			}
		}
		from = len(l.lines)
		changed, eof := l.changed, l.eof
		l.mu.Unlock()
		if eof {
			return nil, fmt.Errorf("the process's log ended")
		}
		select {
		case <-changed:
		case <-timeout.C:
			return nil, fmt.Errorf("not logged within %v", bounded)
		}
	}
}

// all returns the submatches of every line matching re so far.
func (l *logLines) all(re *regexp.Regexp) [][]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out [][]string
	for _, line := range l.lines {
		if m := re.FindStringSubmatch(line); m != nil {
			out = append(out, m)
		}
	}
	return out
}

// len returns how many lines were logged so far.
func (l *logLines) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.lines)
}

func (l *logLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// freePort returns a loopback port that was free a moment ago, for the
// tests that must know the port before the server binds it.
func freePort(t testing.TB) string { return strconv.Itoa(testsync.FreePort(t)) }

// client is an HTTP client for many concurrent long requests.
var client = &http.Client{Transport: &http.Transport{
	MaxIdleConnsPerHost: 2000,
	DisableCompression:  true,
}}

// get fetches url and returns the status and body; it fails the test on a
// transport error.
func get(t testing.TB, url string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), bounded)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", url, err)
	}
	return resp.StatusCode, string(b)
}

// getLater sends GET url and returns a channel that receives its body, or
// the error, once it has answered.
func getLater(url string) <-chan string {
	ch := make(chan string, 1)
	go func() {
		resp, err := client.Get(url)
		if err != nil {
			ch <- err.Error()
			return
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			ch <- err.Error()
			return
		}
		ch <- string(body)
	}()
	return ch
}

// waiter is a GET whose body is read line by line: a parked wait page.
type waiter struct {
	resp   *http.Response
	r      *bufio.Reader
	cancel context.CancelFunc
}

// startWait sends GET url and returns once the first line of the body has
// arrived, checking that it is want.
func startWait(t testing.TB, url, want string) *waiter {
	t.Helper()
	w, err := openWait(url, want)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func openWait(url, want string) (*waiter, error) {
	ctx, cancel := context.WithTimeout(context.Background(), bounded)
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	resp, err := client.Do(req)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	w := &waiter{resp: resp, r: bufio.NewReader(resp.Body), cancel: cancel}
	line, err := w.r.ReadString('\n')
	if err != nil || line != want {
		resp.Body.Close()
		cancel()
		return nil, fmt.Errorf("GET %s: first line %q (%v), want %q", url, line, err, want)
	}
	return w, nil
}

// rest reads the remainder of the body.
func (w *waiter) rest() (string, error) {
	defer w.cancel()
	defer w.resp.Body.Close()
	b, err := io.ReadAll(w.r)
	return string(b), err
}

func readAll(t testing.TB, r io.Reader) string {
	t.Helper()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
