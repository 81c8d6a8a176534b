package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
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

// TestDaemonStartStatusStop walks PasteScript's daemon vocabulary with its
// messages and exit codes (spec/pastedeploy.md §4.2).
func TestDaemonStartStatusStop(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	port := freePort(t)
	if err := os.WriteFile(filepath.Join(dir, "dev.ini"), fmt.Appendf(nil, daemonINI, port), 0o644); err != nil {
		t.Fatal(err)
	}
	pidFile := filepath.Join(dir, "paster.pid")
	t.Cleanup(func() {
		if pid, err := readPIDFile(pidFile); err == nil {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
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

// TestMonitorRestart kills the server under --monitor-restart and sees the
// monitor start it again; SIGTERM to the monitor stops both.
func TestMonitorRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	port := freePort(t)
	if err := os.WriteFile(filepath.Join(dir, "dev.ini"), fmt.Appendf(nil, daemonINI, port), 0o644); err != nil {
		t.Fatal(err)
	}
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
