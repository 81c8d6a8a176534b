package scenario

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/paster-dev/paster/internal/testsync"
)

// TestREADMECommands runs every command README.md shows, in the order it
// shows them, in a fresh copy of the repository (the files git tracks or
// would track, as they are in the working tree), and checks that each does
// what the README says: the outputs it prints after a command (`# output`
// lines in sh blocks, where "..." stands for anything on the line; the lines
// after a `$ command` in plain blocks, exactly) appear, servers serve. A command the README shows that this test does not know
// how to run fails the test, so the README cannot gain untested commands.
//
// The README's ports (8080, 9000) are replaced by free ones, in the commands
// and in the copy's development.ini; `go test -race ./...` is checked to be
// what .ci/run runs rather than run again from inside the suite.
func TestREADMECommands(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and serves a fresh copy of the repository")
	}
	t.Parallel()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	cmds := readmeCommands(string(readme))
	if len(cmds) == 0 {
		t.Fatal("README.md shows no commands")
	}
	dir := freshCopy(t, root)
	ports := map[string]string{"8080": freePort(t), "9000": freePort(t)}
	ini := filepath.Join(dir, "development.ini")
	b, err := os.ReadFile(ini)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ini, bytes.ReplaceAll(b, []byte("port = 8080"), []byte("port = "+ports["8080"])), 0o644); err != nil {
		t.Fatal(err)
	}
	r := &readmeRun{t: t, dir: dir, ports: ports}
	defer r.stopServer()
	for _, c := range cmds {
		c.text = r.localize(c.text)
		for i := range c.want {
			c.want[i] = r.localize(c.want[i])
		}
		kind := stepOf(c.text)
		t.Logf("README line %d: %s (%s)", c.line, c.text, kind)
		switch kind {
		case stepCI:
			ci, err := os.ReadFile(filepath.Join(root, ".ci", "run"))
			if err != nil || !strings.Contains(string(ci), c.text) {
				t.Errorf("README line %d: .ci/run does not run %q", c.line, c.text)
			}
		case stepServer:
			r.startServer(c)
		case stepBackground:
			r.startBackground(c)
		case stepForeground:
			r.runForeground(c)
		default:
			t.Errorf("README line %d shows %q, which no test runs: teach TestREADMECommands to run it", c.line, c.text)
		}
		if t.Failed() {
			return
		}
	}
	r.finishBackground()
}

// readmeCommand is a command the README shows and what it says it prints.
type readmeCommand struct {
	line  int
	text  string
	want  []string // lines the output must contain
	exact bool     // want is the whole output ($ blocks)
}

// readmeCommands returns the commands of README's code blocks: every line
// of a sh block that is not a comment (the `# ...` lines after a command
// are its output), and every `$ ` line of a plain block (the lines after it
// are its output).
func readmeCommands(readme string) []*readmeCommand {
	var out []*readmeCommand
	var cur *readmeCommand
	fence := ""
	for i, line := range strings.Split(readme, "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "```") {
			if fence == "" {
				fence = strings.TrimPrefix(trimmed, "```")
				if fence == "" {
					fence = "plain"
				}
			} else {
				fence = ""
			}
			cur = nil
			continue
		}
		switch fence {
		case "sh":
			switch {
			case trimmed == "":
				cur = nil
			case strings.HasPrefix(trimmed, "# "):
				if cur != nil {
					cur.want = append(cur.want, strings.TrimPrefix(trimmed, "# "))
				}
			default:
				cur = &readmeCommand{line: i + 1, text: trimmed}
				out = append(out, cur)
			}
		case "plain":
			switch {
			case strings.HasPrefix(line, "$ "):
				cur = &readmeCommand{line: i + 1, text: strings.TrimPrefix(line, "$ "), exact: true}
				out = append(out, cur)
			case cur != nil:
				cur.want = append(cur.want, line)
			}
		}
	}
	return out
}

type stepKind string

const (
	stepCI         stepKind = "run by .ci/run"
	stepServer     stepKind = "server"
	stepBackground stepKind = "background"
	stepForeground stepKind = "foreground"
	stepUnknown    stepKind = "unknown"
)

// readmeSteps says how to run each shape of command the README shows.
var readmeSteps = []struct {
	pattern *regexp.Regexp
	kind    stepKind
}{
	{regexp.MustCompile(`^go test -race \./\.\.\.$`), stepCI},
	{regexp.MustCompile(`^make run$`), stepServer},
	{regexp.MustCompile(`^bin/paster serve \S+( --\S+( [^-]\S*)?| \w+=\S+)*$`), stepServer},
	{regexp.MustCompile(`^bin/paster serve \S+ (start|stop|restart|status)\b`), stepForeground},
	{regexp.MustCompile(`^bin/paster (check|points|version)\b`), stepForeground},
	{regexp.MustCompile(`^make (build|plugins)$`), stepForeground},
	{regexp.MustCompile(`^curl -N `), stepBackground},
	{regexp.MustCompile(`^curl `), stepForeground},
}

func stepOf(cmd string) stepKind {
	for _, s := range readmeSteps {
		if s.pattern.MatchString(cmd) {
			return s.kind
		}
	}
	return stepUnknown
}

// readmeRun is the state of one walk through the README.
type readmeRun struct {
	t          *testing.T
	dir        string
	ports      map[string]string
	server     *exec.Cmd
	serverDone chan struct{}
	serverLog  *testsync.Buffer
	background []*backgroundCmd
}

type backgroundCmd struct {
	c    *readmeCommand
	cmd  *exec.Cmd
	out  *testsync.Buffer
	done chan error
}

// localize replaces the README's ports with this run's.
func (r *readmeRun) localize(s string) string {
	for from, to := range r.ports {
		s = strings.ReplaceAll(s, from, to)
	}
	return s
}

// command runs text with bash in the copy, with the copy's bin first on
// PATH, in its own process group.
func (r *readmeRun) command(text string) *exec.Cmd {
	cmd := exec.Command("bash", "-c", text)
	cmd.Dir = r.dir
	cmd.Env = append(os.Environ(), "PATH="+filepath.Join(r.dir, "bin")+":"+os.Getenv("PATH"), "PASTER_PLUGIN_PATH=")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd
}

// startServer stops the server of an earlier step, starts this one and
// waits until it answers /health/live on the port it serves (the command's
// port=N, else development.ini's).
func (r *readmeRun) startServer(c *readmeCommand) {
	r.finishBackground()
	r.stopServer()
	port := r.ports["8080"]
	if m := regexp.MustCompile(`\bport=(\d+)`).FindStringSubmatch(c.text); m != nil {
		port = m[1]
	}
	cmd := r.command(c.text)
	r.serverLog = &testsync.Buffer{}
	cmd.Stdout, cmd.Stderr = r.serverLog, r.serverLog
	if err := cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	r.server, r.serverDone = cmd, make(chan struct{})
	go func() { cmd.Wait(); close(r.serverDone) }()
	// make run builds first: allow for a cold build cache.
	deadline := time.Now().Add(4 * time.Minute)
	for {
		resp, err := http.Get("http://127.0.0.1:" + port + "/health/live")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		select {
		case <-r.serverDone:
			r.t.Fatalf("README line %d: %s exited before serving on port %s:\n%s", c.line, c.text, port, r.serverLog.String())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("README line %d: %s does not serve on port %s:\n%s", c.line, c.text, port, r.serverLog.String())
		}
	}
	for _, w := range c.want {
		if !matchesShown(r.serverLog.String(), w) {
			r.t.Errorf("README line %d: %s logged no %q:\n%s", c.line, c.text, w, r.serverLog.String())
		}
	}
}

// stopServer ends the running server, if any, as a terminal's ^C would.
func (r *readmeRun) stopServer() {
	if r.server == nil {
		return
	}
	syscall.Kill(-r.server.Process.Pid, syscall.SIGINT)
	select {
	case <-r.serverDone:
	case <-time.After(bounded):
		syscall.Kill(-r.server.Process.Pid, syscall.SIGKILL)
		<-r.serverDone
		r.t.Errorf("the server did not stop within %s after SIGINT:\n%s", bounded, r.serverLog.String())
	}
	r.server = nil
}

// runForeground runs a command to its end and checks its output.
func (r *readmeRun) runForeground(c *readmeCommand) {
	cmd := r.command(c.text)
	var out testsync.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(bounded):
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		r.t.Errorf("README line %d: %s did not finish within %s", c.line, c.text, bounded)
	}
	r.checkOutput(c, out.String())
}

// matchesShown reports whether output holds a line the README shows, where
// "..." in what it shows stands for anything on the same line.
func matchesShown(output, shown string) bool {
	parts := strings.Split(shown, "...")
	for i, p := range parts {
		parts[i] = regexp.QuoteMeta(strings.TrimSpace(p))
	}
	return regexp.MustCompile(strings.Join(parts, ".*")).MatchString(output)
}

func (r *readmeRun) checkOutput(c *readmeCommand, got string) {
	if c.exact {
		want := strings.TrimSpace(strings.Join(c.want, "\n"))
		if strings.TrimSpace(got) != want {
			r.t.Errorf("README line %d: %s printed\n%s\nthe README shows\n%s", c.line, c.text, got, want)
		}
		return
	}
	for _, w := range c.want {
		if !matchesShown(got, w) {
			r.t.Errorf("README line %d: %s printed %q; the README shows %q", c.line, c.text, got, w)
		}
	}
}

// startBackground starts a command that keeps running (a long-poll) and
// waits for the first line the README shows for it; the rest is checked
// when it ends.
func (r *readmeRun) startBackground(c *readmeCommand) {
	cmd := r.command(c.text)
	b := &backgroundCmd{c: c, cmd: cmd, out: &testsync.Buffer{}, done: make(chan error, 1)}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, b.out
	if err := cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	first := make(chan string, 1)
	go func() {
		br := bufio.NewReader(pr)
		line, _ := br.ReadString('\n')
		b.out.Write([]byte(line))
		first <- line
		io.Copy(b.out, br)
	}()
	go func() { err := cmd.Wait(); pw.Close(); b.done <- err }()
	r.background = append(r.background, b)
	select {
	case line := <-first:
		if len(c.want) > 0 && !strings.Contains(line, c.want[0]) {
			r.t.Errorf("README line %d: %s began with %q; the README shows %q", c.line, c.text, line, c.want[0])
		}
	case <-time.After(bounded):
		r.t.Errorf("README line %d: %s printed nothing within %s", c.line, c.text, bounded)
	}
}

// finishBackground waits for the background commands to end and checks
// everything they printed.
func (r *readmeRun) finishBackground() {
	for _, b := range r.background {
		select {
		case <-b.done:
		case <-time.After(bounded):
			syscall.Kill(-b.cmd.Process.Pid, syscall.SIGKILL)
			<-b.done
			r.t.Errorf("README line %d: %s did not finish within %s", b.c.line, b.c.text, bounded)
		}
		r.checkOutput(b.c, b.out.String())
	}
	r.background = nil
}

// freshCopy copies the repository's files (tracked, or untracked and not
// ignored: what a clone of this working tree would hold) into a temporary
// directory.
func freshCopy(t *testing.T, root string) string {
	t.Helper()
	out, err := exec.Command("git", "-C", root, "ls-files", "-z", "--cached", "--others", "--exclude-standard").Output()
	if err != nil {
		t.Skipf("not a git checkout (%v): the README walk needs one to copy", err)
	}
	dir := t.TempDir()
	for _, name := range strings.Split(strings.TrimRight(string(out), "\x00"), "\x00") {
		src := filepath.Join(root, name)
		info, err := os.Lstat(src)
		if err != nil || !info.Mode().IsRegular() {
			continue // deleted in the working tree, or not a file
		}
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, info.Mode().Perm()); err != nil {
			t.Fatal(fmt.Errorf("copying %s: %w", name, err))
		}
	}
	return dir
}
