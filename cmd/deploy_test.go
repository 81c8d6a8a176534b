package pastercmd

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// unixINI is swapINI on a unix socket (web.sock beside the INI file) with
// the socket_mode the test chooses.
var unixINI = strings.Replace(swapINI, "host = 127.0.0.1\nport = %d\n", "host = unix:web.sock\nsocket_mode = %s\n", 1)

// dialUnix dials the unix socket at path whatever address it is asked for.
func dialUnix(path string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", path)
	}
}

// TestUnixSocketReload serves on a unix socket and moves the server, under
// continuous load over that socket, from the built-in http runner into a
// plugin process (chat's hijacked_runner, which gets the host's socket
// lent), to another setting of it, and back: no request fails, the socket
// file keeps the mode of the latest section, and it is gone once paster
// stops.
func TestUnixSocketReload(t *testing.T) {
	t.Parallel()
	buildPlugin(t, "chat")
	const (
		builtin = "egg:paster#http"
		plugin  = "egg:chat#hijacked_runner"
	)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "hello"), []byte("hi\n"), 0o644)
	ini := filepath.Join(dir, "dev.ini")
	sock := filepath.Join(dir, "web.sock")
	write := func(use, mode string, n int) {
		extra := ""
		if use != builtin {
			extra = fmt.Sprintf("tick_interval = %d\n", 30+n)
		}
		os.WriteFile(ini+".tmp", fmt.Appendf(nil, unixINI, use, mode, extra), 0o644)
		if err := os.Rename(ini+".tmp", ini); err != nil {
			t.Fatal(err)
		}
	}
	// A stale socket file, as a killed paster leaves: it is replaced.
	stale, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()

	write(builtin, "0660", 0)
	p := spawnServe(t, dir, 0, "dev.ini", "--plugin-dir", filepath.Join(binDir, "plugins"))
	p.base, p.dial = "http://paster", dialUnix(sock)
	p.waitFor("the server to answer on the socket", func() bool {
		code, _ := p.get("/health/live")
		return code == 200
	})
	mode := func() fs.FileMode {
		st, err := os.Lstat(sock)
		if err != nil {
			t.Fatal(err)
		}
		return st.Mode()
	}
	if m := mode(); m.Type() != fs.ModeSocket || m.Perm() != 0o660 {
		t.Errorf("socket file %s, want a socket with mode 0660", m)
	}
	l := startLoadDial(p.base, "/hello", 4, p.dial)
	p.waitFor("load to be served", func() bool { return l.seen("hi\n") })
	steps := []struct{ use, mode string }{{plugin, "0660"}, {plugin, "0600"}, {builtin, "0666"}}
	for i, st := range steps {
		n := i + 1
		write(st.use, st.mode, n)
		p.cmd.Process.Signal(syscall.SIGHUP)
		// /health/'s details are not for a client without an address
		// (a unix socket's): the log tells.
		p.waitFor("the reload", func() bool {
			return strings.Contains(p.log.String(), fmt.Sprintf("reloaded: generation=%d ", n+1))
		})
		p.waitFor("the old generation drained", func() bool {
			return strings.Contains(p.log.String(), fmt.Sprintf("generation drained: generation=%d ", n))
		})
		sent := l.sent.Load()
		p.waitFor("requests after the switch", func() bool { return l.sent.Load() > sent+50 })
		if m := mode().Perm(); m != fs.FileMode(mustOctal(t, st.mode)) {
			t.Errorf("step %d: socket mode %04o, want %s", n, m, st.mode)
		}
	}
	l.finish(t)
	if n := strings.Count(p.log.String(), "starting the new server beside the old one"); n != len(steps) {
		t.Errorf("%d server switches beside the old one, want %d", n, len(steps))
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	if err := <-p.done; err != nil {
		t.Errorf("paster serve: %v", err)
	}
	p.done <- nil
	if _, err := os.Lstat(sock); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket file after shutdown: %v", err)
	}
}

// TestUnixSocketInUse: a second paster asked for the socket file of one
// that serves refuses to start, naming the path, and the first keeps
// serving.
func TestUnixSocketInUse(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "hello"), []byte("hi\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "dev.ini"), fmt.Appendf(nil, unixINI, "egg:paster#http", "0660", ""), 0o644)
	sock := filepath.Join(dir, "web.sock")
	p := spawnServe(t, dir, 0, "dev.ini")
	p.base, p.dial = "http://paster", dialUnix(sock)
	p.waitFor("the server to answer on the socket", func() bool {
		code, _ := p.get("/health/live")
		return code == 200
	})
	_, stderr, code := paster(t, dir, "serve", "dev.ini")
	if code != 1 || !strings.Contains(stderr, "another process listens on the socket "+sock) {
		t.Errorf("second paster: exit %d, stderr:\n%s", code, stderr)
	}
	if code, body := p.get("/hello"); code != 200 || body != "hi\n" {
		t.Errorf("the first paster after the second tried: %d %q", code, body)
	}
}

func mustOctal(t *testing.T, s string) uint32 {
	t.Helper()
	var n uint32
	if _, err := fmt.Sscanf(s, "%o", &n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestCheckDeployKeys: paster check accepts a unix socket host (which was
// "bad port in ..." before) and a systemd: one, and refuses a bad
// socket_mode naming the file, line, section and key.
func TestCheckDeployKeys(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, server, want string
		code               int
	}{
		{name: "unix socket", server: "host = unix:/run/paster/web.sock\nsocket_mode = 0600", want: "ok", code: 0},
		{name: "systemd socket", server: "host = systemd:web", want: "ok", code: 0},
		{name: "bad socket_mode", server: "host = unix:web.sock\nsocket_mode = 0999", want: "dev.ini:4 [server:main] socket_mode: \"0999\" is not a file mode", code: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			ini := "[server:main]\nuse = egg:paster#http\n" + tt.server + "\n\n[app:main]\nuse = egg:paster#health\n"
			os.WriteFile(filepath.Join(dir, "dev.ini"), []byte(ini), 0o644)
			stdout, stderr, code := paster(t, dir, "check", "dev.ini")
			if code != tt.code || !strings.Contains(stdout+stderr, tt.want) {
				t.Errorf("exit %d, want %d and %q in:\n%s%s", code, tt.code, tt.want, stdout, stderr)
			}
		})
	}
}
