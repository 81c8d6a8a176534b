package pastercmd

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// sdINI serves hello from a plugin binary and health, on the address the
// test chooses.
const sdINI = `[server:main]
use = egg:paster#http
host = %s
shutdown_timeout = 5

[composite:main]
use = egg:paster#urlmap
/hello = hello
/health = health

[app:hello]
use = plugin:paster-plugin-hello#main
name = systemd

[app:health]
use = egg:paster#health
`

// notifySocket is the test's end of NOTIFY_SOCKET: every datagram paster
// sends, one message a string.
type notifySocket struct {
	path string
	msgs chan string
}

func listenNotify(t *testing.T, dir string) *notifySocket {
	t.Helper()
	path := filepath.Join(dir, "notify.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	n := &notifySocket{path: path, msgs: make(chan string, 1024)}
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := c.Read(buf)
			if err != nil {
				close(n.msgs)
				return
			}
			n.msgs <- string(buf[:k])
		}
	}()
	return n
}

// expect waits for a message holding each of want (WATCHDOG=1 messages in
// between are skipped unless asked for) and returns it; it fails the test
// after 60s or when another message comes first.
func (n *notifySocket) expect(t *testing.T, want ...string) string {
	t.Helper()
	timeout := time.After(60 * time.Second)
	for {
		select {
		case m, ok := <-n.msgs:
			if !ok {
				t.Fatalf("NOTIFY_SOCKET closed while waiting for %q", want)
			}
			if m == "WATCHDOG=1" && !slices.Contains(want, "WATCHDOG=1") {
				continue
			}
			for _, w := range want {
				if !strings.Contains(m, w) {
					t.Fatalf("sd_notify message %q, want one with %q", m, want)
				}
			}
			return m
		case <-timeout:
			t.Fatalf("no sd_notify message with %q within 60s", want)
		}
	}
}

// TestSystemd runs paster serve as systemd runs a Type=notify-reload
// service with a .socket unit: the test binds the sockets (a TCP one named
// "web", a unix one named "local") and passes them as descriptors 3 and 4
// with LISTEN_FDS, LISTEN_FDNAMES and LISTEN_PID (set to paster's pid by
// the shell that execs it), and reads NOTIFY_SOCKET itself, with a
// watchdog of 400ms. paster serves on systemd:web without binding, says
// READY=1 once it serves, RELOADING=1 and READY=1 around a reload that
// moves the server to the unix socket by its address, keeps the watchdog,
// says STOPPING=1 on SIGTERM and exits 0. Its plugin process inherits none
// of those variables.
func TestSystemd(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	copyPlugin(t, dir, "")
	ini := filepath.Join(dir, "dev.ini")
	os.WriteFile(ini, fmt.Appendf(nil, sdINI, "systemd:web"), 0o644)

	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sockPath := filepath.Join(dir, "local.sock")
	unix, err := net.Listen("unix", sockPath)
	if err != nil {
		t.Fatal(err)
	}
	var files []*os.File
	for _, ln := range []net.Listener{tcp, unix} {
		f, err := ln.(interface{ File() (*os.File, error) }).File()
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	notify := listenNotify(t, dir)

	cmd := exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ exec "$0" "$@"`, filepath.Join(binDir, "paster"), "serve", "dev.ini")
	cmd.Dir = dir
	cmd.ExtraFiles = files
	cmd.Env = append(os.Environ(), "PASTER_PLUGIN_PATH=", "LISTEN_FDS=2", "LISTEN_FDNAMES=web:local",
		"NOTIFY_SOCKET="+notify.path, "WATCHDOG_USEC=400000")
	p := spawnCmd(t, cmd, "http://"+tcp.Addr().String())
	for _, f := range files {
		f.Close()
	}
	// The test's copies: paster has its own now. The unix listener must
	// not remove the file when the test closes it.
	unix.(*net.UnixListener).SetUnlinkOnClose(false)
	tcp.Close()
	unix.Close()

	notify.expect(t, "READY=1")
	if code, body := p.get("/hello"); code != 200 || !strings.Contains(body, "systemd") {
		t.Fatalf("GET /hello on the socket systemd passed: %d %q", code, body)
	}
	if !strings.Contains(p.log.String(), "systemd passed sockets no server section uses") || !strings.Contains(p.log.String(), "sockets=unix:"+sockPath) {
		t.Errorf("no warning about the unused socket local:\n%s", p.log.String())
	}
	if strings.Contains(p.log.String(), "listen on") {
		t.Errorf("paster bound a socket of its own:\n%s", p.log.String())
	}
	// The plugin process got none of systemd's variables.
	h := p.health()
	pid := pluginPID(h, "/paster-plugin-hello")
	env, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		t.Fatalf("plugin pid %d: %v", pid, err)
	}
	for _, v := range hostOnlyEnvNames {
		if strings.Contains("\x00"+string(env), "\x00"+v+"=") {
			t.Errorf("the plugin process inherited %s", v)
		}
	}

	notify.expect(t, "WATCHDOG=1")

	// A reload onto the other socket, named by its address.
	os.WriteFile(ini, fmt.Appendf(nil, sdINI, "unix:"+sockPath), 0o644)
	p.cmd.Process.Signal(syscall.SIGHUP)
	notify.expect(t, "RELOADING=1", "MONOTONIC_USEC=")
	notify.expect(t, "READY=1", "STATUS=serving (reloaded)")
	p.base, p.dial = "http://paster", dialUnix(sockPath)
	if code, body := p.get("/hello"); code != 200 || !strings.Contains(body, "systemd") {
		t.Fatalf("GET /hello on the unix socket systemd passed: %d %q", code, body)
	}
	// A reload that fails: READY=1 again, with the reason.
	os.WriteFile(ini, []byte("[server:main]\nuse = egg:paster#nosuch\n"), 0o644)
	p.cmd.Process.Signal(syscall.SIGHUP)
	notify.expect(t, "RELOADING=1")
	notify.expect(t, "READY=1", "STATUS=serving the previous configuration: reload failed:")

	p.cmd.Process.Signal(syscall.SIGTERM)
	notify.expect(t, "STOPPING=1")
	if err := <-p.done; err != nil {
		t.Errorf("paster serve: %v", err)
	}
	p.done <- nil
	// The socket's file is systemd's: paster leaves it.
	if _, err := os.Lstat(sockPath); err != nil {
		t.Errorf("the socket file systemd made: %v", err)
	}
}

// hostOnlyEnvNames are the variables of systemd's that a plugin process
// must not inherit.
var hostOnlyEnvNames = []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "NOTIFY_SOCKET", "WATCHDOG_USEC"}

// TestSystemdExampleChecks: the INI file of examples/systemd passes paster
// check (with its static files from a temporary directory).
func TestSystemdExampleChecks(t *testing.T) {
	t.Parallel()
	ini, err := filepath.Abs("../examples/systemd/site.ini")
	if err != nil {
		t.Fatal(err)
	}
	stdout, stderr, code := paster(t, t.TempDir(), "check", ini, "www="+t.TempDir())
	if code != 0 || !strings.Contains(stdout, "host = systemd:web") {
		t.Errorf("paster check %s: exit %d\n%s%s", ini, code, stdout, stderr)
	}
}
