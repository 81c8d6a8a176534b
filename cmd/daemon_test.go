package pastercmd

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/paster-dev/paster/internal/testsync"
)

const daemonINI = `[server:main]
use = egg:paster#http
host = 127.0.0.1
port = %d
shutdown_timeout = 5

[composite:main]
use = egg:paster#urlmap
/health = health
/hello = hello

[app:health]
use = egg:paster#health

# A plugin process: it must not hold the pipe "start" waits on.
[app:hello]
use = egg:hello#main
`

// daemonDir writes daemonINI with a free port to dev.ini in a fresh
// directory and returns the directory and the port.
func daemonDir(t *testing.T) (dir string, port int) {
	t.Helper()
	dir = t.TempDir()
	port = testsync.FreePort(t)
	if err := os.WriteFile(filepath.Join(dir, "dev.ini"), fmt.Appendf(nil, daemonINI, port), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, port
}

// killPIDFileAtEnd SIGKILLs the process pidFile names, if any, when the
// test ends; it returns pidFile.
func killPIDFileAtEnd(t *testing.T, pidFile string) string {
	t.Cleanup(func() {
		if pid, err := readPIDFile(pidFile); err == nil {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	return pidFile
}

// TestDaemonStartStatusStop walks PasteScript's daemon vocabulary with its
// messages and exit codes (spec/pastedeploy.md §4.2).
func TestDaemonStartStatusStop(t *testing.T) {
	t.Parallel()
	dir, port := daemonDir(t)
	pidFile := killPIDFileAtEnd(t, filepath.Join(dir, "paster.pid"))
	expect := func(args []string, code int, want string) string {
		t.Helper()
		stdout, stderr, got := paster(t, dir, args...)
		if got != code || !strings.Contains(stdout+stderr, want) {
			t.Errorf("paster %s: exit %d, want %d, output %q %q, want it to contain %q",
				strings.Join(args, " "), got, code, stdout, stderr, want)
		}
		return stdout + stderr
	}

	expect([]string{"serve", "dev.ini", "status"}, 1, "No PID file paster.pid")
	expect([]string{"serve", "dev.ini", "stop"}, 1, "No PID file exists in paster.pid")
	expect([]string{"serve", "dev.ini", "--daemon", "--reload"}, 2, "The --daemon and --reload options may not be used together")
	expect([]string{"serve", "dev.ini", "start", "--reload"}, 2, "may not be used together")

	out := expect([]string{"serve", "dev.ini", "start"}, 0, "Starting server in PID ")
	pid, err := readPIDFile(pidFile)
	if err != nil {
		t.Fatalf("pid file after start: %v", err)
	}
	if !strings.Contains(out, fmt.Sprintf("Starting server in PID %d.", pid)) {
		t.Errorf("start said %q; pid file has %d", out, pid)
	}
	p := &serveProc{t: t, base: fmt.Sprintf("http://127.0.0.1:%d", port), done: make(chan error, 1)}
	if code, body := p.get("/health/live"); code != 200 {
		t.Errorf("daemon's /health/live: %d %s", code, body)
	}
	if code, body := p.get("/hello"); code != 200 {
		t.Errorf("daemon's plugin app: %d %s", code, body)
	}
	expect([]string{"serve", "dev.ini", "status"}, 0, fmt.Sprintf("Server running in PID %d", pid))
	expect([]string{"serve", "dev.ini", "start"}, 1, fmt.Sprintf("Daemon is already running (PID: %d from PID file paster.pid)", pid))

	expect([]string{"serve", "dev.ini", "stop"}, 0, "")
	if alive(pid) {
		t.Errorf("PID %d still alive after stop", pid)
	}
	if _, err := os.Stat(pidFile); !os.IsNotExist(err) {
		t.Errorf("pid file after stop: %v", err)
	}
	expect([]string{"serve", "dev.ini", "status"}, 1, "No PID file paster.pid")
	expect([]string{"serve", "dev.ini", "stop"}, 1, "Could not stop daemon")
	log, _ := os.ReadFile(filepath.Join(dir, "paster.log"))
	if !strings.Contains(string(log), "Starting server in PID") || !strings.Contains(string(log), "shutting down") {
		t.Errorf("paster.log lacks the server's messages:\n%s", log)
	}

	// A stale pid file.
	os.WriteFile(pidFile, []byte("999999\n"), 0o644)
	expect([]string{"serve", "dev.ini", "status"}, 1, "PID 999999 in paster.pid is not running")
	expect([]string{"serve", "dev.ini", "stop"}, 1, "PID in paster.pid is not valid (deleting)")
	if _, err := os.Stat(pidFile); !os.IsNotExist(err) {
		t.Errorf("stale pid file not deleted: %v", err)
	}
	os.WriteFile(pidFile, []byte("garbage\n"), 0o644)
	expect([]string{"serve", "dev.ini", "status"}, 1, "No PID in file paster.pid")
	expect([]string{"serve", "dev.ini", "restart"}, 1, "Not a valid PID file in paster.pid")
	expect([]string{"serve", "dev.ini", "restart"}, 1, "Could not stop daemon; aborting")
}

// TestDaemonStalePIDFileReused: a pid file left behind by a server that
// died (SIGKILL, a crash, a reboot) names a PID the system may have given
// to another program since. status must not call that program a running
// server, stop must not signal it, and start must not refuse to start;
// only a PID file a live paster holds counts.
func TestDaemonStalePIDFileReused(t *testing.T) {
	t.Parallel()
	dir, port := daemonDir(t)
	pidFile := killPIDFileAtEnd(t, filepath.Join(dir, "paster.pid"))
	other := exec.Command("sleep", "60")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	// One Wait, in the goroutine: the cleanup waits for it to return.
	otherDone, waited := make(chan error, 1), make(chan struct{})
	go func() { otherDone <- other.Wait(); close(waited) }()
	t.Cleanup(func() { other.Process.Kill(); <-waited })
	if err := os.WriteFile(pidFile, fmt.Appendf(nil, "%d\n", other.Process.Pid), 0o644); err != nil {
		t.Fatal(err)
	}

	stdout, stderr, code := paster(t, dir, "serve", "dev.ini", "status")
	if code != 1 || !strings.Contains(stdout, fmt.Sprintf("PID %d in paster.pid is not a running paster", other.Process.Pid)) {
		t.Errorf("status with another program's PID: exit %d, output %q %q", code, stdout, stderr)
	}
	stdout, stderr, code = paster(t, dir, "serve", "dev.ini", "stop")
	if code != 1 || !strings.Contains(stdout, "PID in paster.pid is not valid (deleting)") {
		t.Errorf("stop with another program's PID: exit %d, output %q %q", code, stdout, stderr)
	}
	select {
	case err := <-otherDone:
		t.Fatalf("stop signalled another program named by a stale pid file: %v", err)
	default:
	}
	if _, err := os.Stat(pidFile); !os.IsNotExist(err) {
		t.Errorf("stale pid file not deleted: %v", err)
	}

	// start is not refused by such a file either.
	if err := os.WriteFile(pidFile, fmt.Appendf(nil, "%d\n", other.Process.Pid), 0o644); err != nil {
		t.Fatal(err)
	}
	if stdout, stderr, code := paster(t, dir, "serve", "dev.ini", "start"); code != 0 {
		t.Fatalf("start over a stale pid file: exit %d: %s %s", code, stdout, stderr)
	}
	server, err := readPIDFile(pidFile)
	if err != nil || server == other.Process.Pid {
		t.Fatalf("pid file after start names %d (%v)", server, err)
	}
	p := &serveProc{t: t, base: fmt.Sprintf("http://127.0.0.1:%d", port), done: make(chan error, 1)}
	if got := p.healthPID(); got != server {
		t.Errorf("the server answering is PID %d; pid file says %d", got, server)
	}
	if stdout, _, code := paster(t, dir, "serve", "dev.ini", "status"); code != 0 || !strings.Contains(stdout, fmt.Sprintf("Server running in PID %d", server)) {
		t.Errorf("status of the new server: exit %d, %q", code, stdout)
	}
	// A second server cannot take over the file of one that runs.
	want := fmt.Sprintf("paster.pid is held by the running paster with PID %d", server)
	if _, stderr, code := paster(t, dir, "serve", "dev.ini", "--pid-file", "paster.pid"); code != 1 || !strings.Contains(stderr, want) {
		t.Errorf("second server on a held pid file: exit %d, stderr %q, want %q", code, stderr, want)
	}
	if _, _, code := paster(t, dir, "serve", "dev.ini", "stop"); code != 0 || !waitGone(server, 10*time.Second) {
		t.Errorf("stop: exit %d, server %d alive=%v", code, server, alive(server))
	}
	select {
	case err := <-otherDone:
		t.Fatalf("the other program ended: %v", err)
	default:
	}
}

// TestPIDFileSymlink: a pid file path that is a symbolic link is refused,
// by start and by a server given --pid-file, and the file it points to is
// left alone. paster commonly runs as root until it has bound; where the
// pid file's directory is writable by others (and fs.protected_symlinks is
// off), a link planted there made it truncate and overwrite any file.
func TestPIDFileSymlink(t *testing.T) {
	t.Parallel()
	dir, _ := daemonDir(t)
	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, []byte("precious\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := killPIDFileAtEnd(t, filepath.Join(dir, "paster.pid"))
	if err := os.Symlink(victim, link); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"serve", "dev.ini", "start"},
		{"serve", "dev.ini", "--pid-file", "paster.pid", "--log-file", "fg.log"},
	} {
		stdout, stderr, code := paster(t, dir, args...)
		log, _ := os.ReadFile(filepath.Join(dir, "fg.log"))
		if code != 1 || !strings.Contains(stdout+stderr+string(log), "paster.pid is a symbolic link") {
			t.Errorf("paster %s: exit %d, output %q %q %q", strings.Join(args, " "), code, stdout, stderr, log)
		}
		if b, _ := os.ReadFile(victim); string(b) != "precious\n" {
			t.Fatalf("paster %s wrote through the pid file's symbolic link: the file it names holds %q", strings.Join(args, " "), b)
		}
	}
}

// TestLogFileSymlink: a log file path that is a symbolic link is refused,
// by start (its default paster.log), by a server in the foreground and by
// check given --log-file, and the file it points to is left alone; a
// regular file is appended to as before. paster commonly runs as root
// until it has bound; where the log's directory is writable by others (and
// fs.protected_symlinks is off), a link planted there made it create or
// append to any file.
func TestLogFileSymlink(t *testing.T) {
	t.Parallel()
	dir, _ := daemonDir(t)
	killPIDFileAtEnd(t, filepath.Join(dir, "paster.pid"))
	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, []byte("precious\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"paster.log", "fg.log"} {
		if err := os.Symlink(victim, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	// --user names nobody, so that the foreground server stops (exit 1,
	// logging why) right after opening its log.
	const noUser = "paster-no-such-user"
	for _, tt := range []struct {
		args []string
		link string
	}{
		{[]string{"serve", "dev.ini", "start"}, "paster.log"},
		{[]string{"serve", "dev.ini", "--log-file", "fg.log", "--user", noUser}, "fg.log"},
		{[]string{"check", "--log-file", "fg.log", "dev.ini"}, "fg.log"},
	} {
		stdout, stderr, code := paster(t, dir, tt.args...)
		if code == 0 || !strings.Contains(stdout+stderr, tt.link+" is a symbolic link") {
			t.Errorf("paster %s: exit %d, output %q %q", strings.Join(tt.args, " "), code, stdout, stderr)
		}
		if b, _ := os.ReadFile(victim); string(b) != "precious\n" {
			t.Fatalf("paster %s wrote through the log file's symbolic link: the file it names holds %q", strings.Join(tt.args, " "), b)
		}
	}
	regular := filepath.Join(dir, "regular.log")
	if err := os.WriteFile(regular, []byte("earlier\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, code := paster(t, dir, "serve", "dev.ini", "--log-file", "regular.log", "--user", noUser); code != 1 {
		t.Errorf("serve --log-file regular.log --user %s: exit %d, want 1", noUser, code)
	}
	if b, _ := os.ReadFile(regular); !strings.HasPrefix(string(b), "earlier\n") || !strings.Contains(string(b), noUser) {
		t.Errorf("the regular log file was not appended to: it holds %q", b)
	}
}

// TestMonitorRestart kills the server under --monitor-restart and sees the
// monitor start it again; SIGTERM to the monitor stops both.
func TestMonitorRestart(t *testing.T) {
	t.Parallel()
	dir, port := daemonDir(t)
	p := startServe(t, dir, port, "dev.ini", "--monitor-restart", "--pid-file", "m.pid")
	first := p.healthPID()
	if pid, err := readPIDFile(filepath.Join(dir, "m.pid")); err != nil || pid != p.cmd.Process.Pid {
		t.Errorf("pid file holds %d (%v); want the monitor's %d", pid, err, p.cmd.Process.Pid)
	}
	syscall.Kill(first, syscall.SIGKILL)
	p.waitFor("the server to be started again", func() bool {
		code, _ := p.get("/health/live")
		return code == 200 && p.healthPID() != first
	})
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatal("monitor did not exit after SIGTERM")
	}
	p.done <- nil
	second := p.healthPID()
	if second != 0 {
		t.Errorf("server %d still answers after the monitor stopped", second)
	}
	if !strings.Contains(p.log.String(), "Restarting") {
		t.Errorf("monitor log lacks the restart banner:\n%s", p.log.String())
	}
}

// TestDaemonRestart restarts a live daemon: the old server stops, a new one
// serves on the same port, and the pid file names the new one.
func TestDaemonRestart(t *testing.T) {
	t.Parallel()
	dir, port := daemonDir(t)
	pidFile := killPIDFileAtEnd(t, filepath.Join(dir, "paster.pid"))
	if stdout, stderr, code := paster(t, dir, "serve", "dev.ini", "start"); code != 0 {
		t.Fatalf("start: exit %d: %s %s", code, stdout, stderr)
	}
	first, err := readPIDFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	stdout, stderr, code := paster(t, dir, "serve", "dev.ini", "restart")
	if code != 0 {
		log, _ := os.ReadFile(filepath.Join(dir, "paster.log"))
		t.Fatalf("restart: exit %d: %s %s\npaster.log:\n%s", code, stdout, stderr, log)
	}
	second, err := readPIDFile(pidFile)
	if err != nil {
		t.Fatalf("pid file after restart: %v", err)
	}
	if second == first || !alive(second) || alive(first) {
		t.Errorf("after restart: old PID %d alive=%v, new PID %d alive=%v", first, alive(first), second, alive(second))
	}
	if !strings.Contains(stdout, fmt.Sprintf("Starting server in PID %d.", second)) {
		t.Errorf("restart said %q; pid file has %d", stdout, second)
	}
	p := &serveProc{t: t, base: fmt.Sprintf("http://127.0.0.1:%d", port), done: make(chan error, 1)}
	if got := p.healthPID(); got != second {
		t.Errorf("the server answering is PID %d; pid file says %d", got, second)
	}
	if _, _, code := paster(t, dir, "serve", "dev.ini", "stop"); code != 0 || alive(second) {
		t.Errorf("stop after restart: exit %d, PID %d alive=%v", code, second, alive(second))
	}
}

// TestDaemonMonitorPIDFile starts a daemon under --monitor-restart: the pid
// file names the monitor, and "stop" stops the monitor and its server.
func TestDaemonMonitorPIDFile(t *testing.T) {
	t.Parallel()
	dir, port := daemonDir(t)
	pidFile := filepath.Join(dir, "paster.pid")
	p := &serveProc{t: t, base: fmt.Sprintf("http://127.0.0.1:%d", port), done: make(chan error, 1)}
	t.Cleanup(func() {
		if pid := p.healthPID(); pid != 0 {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		if pid, err := readPIDFile(pidFile); err == nil {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	if stdout, stderr, code := paster(t, dir, "serve", "dev.ini", "start", "--monitor-restart"); code != 0 {
		t.Fatalf("start: exit %d: %s %s", code, stdout, stderr)
	}
	monitor, err := readPIDFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	server := p.healthPID()
	if server == 0 || server == monitor || parentOf(server) != monitor {
		t.Fatalf("pid file names %d; the server answering is %d with parent %d", monitor, server, parentOf(server))
	}
	if _, _, code := paster(t, dir, "serve", "dev.ini", "stop"); code != 0 {
		t.Errorf("stop: exit %d", code)
	}
	if !waitGone(server, 10*time.Second) || alive(monitor) {
		t.Errorf("after stop: monitor %d alive=%v, server %d alive=%v", monitor, alive(monitor), server, alive(server))
	}
}

// TestMonitorKilledTakesServer SIGKILLs the --monitor-restart monitor: its
// server must not stay behind as an orphan.
func TestMonitorKilledTakesServer(t *testing.T) {
	t.Parallel()
	dir, port := daemonDir(t)
	p := startServe(t, dir, port, "dev.ini", "--monitor-restart")
	server := p.healthPID()
	t.Cleanup(func() { syscall.Kill(server, syscall.SIGKILL) })
	p.cmd.Process.Kill()
	if !waitGone(server, 15*time.Second) {
		t.Errorf("server %d still running 15s after its monitor was SIGKILLed", server)
	}
}

// parentOf returns pid's parent process id from /proc, or 0.
func parentOf(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name is in parentheses and may hold spaces.
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(fields[1])
	return ppid
}

// TestStopSignals: SIGINT and SIGTERM each stop paster serve gracefully
// (exit status 0), saying which signal stopped it.
func TestStopSignals(t *testing.T) {
	t.Parallel()
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			t.Parallel()
			dir, port := daemonDir(t)
			p := startServe(t, dir, port, "dev.ini")
			p.cmd.Process.Signal(sig)
			err := testsync.Recv(t, "paster serve to exit", p.done)
			p.done <- err
			if err != nil {
				t.Fatalf("paster serve after %s: %v\n%s", sig, err, p.log.String())
			}
			if want := "signal received; stopping: signal=" + sig.String(); !strings.Contains(p.log.String(), want) {
				t.Errorf("log lacks %q:\n%s", want, p.log.String())
			}
		})
	}
}
