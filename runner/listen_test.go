package runner

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/paster-dev/paster/entrypoints"
	"github.com/paster-dev/paster/internal/testsync"
)

// sockDir returns a short temporary directory for unix sockets (a socket's
// path is limited to 107 bytes; t.TempDir's names can be longer).
func sockDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pst")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// unixClient is an HTTP client whose every request goes to the unix socket
// at path, on a new connection.
func unixClient(path string) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", path)
		},
	}}
}

// TestUnixSocketConfig: host = unix:PATH and socket_mode. Before unix
// sockets, host = unix:/x.sock was "bad port in ...".
func TestUnixSocketConfig(t *testing.T) {
	t.Parallel()
	rel, err := filepath.Abs("web.sock")
	if err != nil {
		t.Fatal(err)
	}
	local := localOf
	tests := []struct {
		name     string
		local    entrypoints.Local
		addr     string
		mode     fs.FileMode
		err      string
		warnings []string
	}{
		{name: "absolute", local: local("host", "unix:/run/paster/web.sock"), addr: "unix:/run/paster/web.sock", mode: 0o660},
		{name: "relative to the INI file", local: local("host", "unix:web.sock"), addr: "unix:" + rel, mode: 0o660},
		{name: "mode", local: local("host", "unix:/run/w.sock", "socket_mode", "0600"), addr: "unix:/run/w.sock", mode: 0o600},
		{name: "mode without leading zero", local: local("host", "unix:/run/w.sock", "socket_mode", "666"), addr: "unix:/run/w.sock", mode: 0o666},
		{name: "abstract", local: local("host", "unix:@paster"), addr: "unix:@paster", mode: 0o660},
		{name: "port ignored", local: local("host", "unix:/run/w.sock", "port", "80"), addr: "unix:/run/w.sock", mode: 0o660,
			warnings: []string{"port ignored"}},
		{name: "systemd", local: local("host", "systemd:web"), addr: "systemd:web"},
		{name: "mode on tcp", local: local("host", "127.0.0.1", "port", "80", "socket_mode", "0600"), addr: "127.0.0.1:80",
			warnings: []string{"socket_mode ignored"}},
		{name: "bad mode", local: local("host", "unix:/run/w.sock", "socket_mode", "rw-rw----"),
			err: "test.ini:7 [server:main] socket_mode:"},
		{name: "mode too large", local: local("host", "unix:/run/w.sock", "socket_mode", "4777"),
			err: "test.ini:7 [server:main] socket_mode:"},
		{name: "no path", local: local("host", "unix:"), err: "test.ini:7 [server:main] host:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			logger, logs := testLogger(t)
			srv, err := NewHTTPServer(tt.local, logger)
			if tt.err != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tt.err) {
					t.Fatalf("error = %v, want one starting %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := srv.Config(); got.Addr != tt.addr || got.SocketMode != tt.mode {
				t.Errorf("Addr, SocketMode = %q, %04o; want %q, %04o", got.Addr, got.SocketMode, tt.addr, tt.mode)
			}
			for _, w := range tt.warnings {
				if !strings.Contains(logs.String(), w) {
					t.Errorf("no warning %q in %s", w, logs.String())
				}
			}
		})
	}
}

// TestServeUnixSocket serves on a unix socket with each socket_mode: the file
// has the mode, requests are answered, and the file is gone after shutdown.
func TestServeUnixSocket(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"", "0600", "0666"} {
		t.Run("mode="+mode, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(sockDir(t), "web.sock")
			pairs := []string{"host", "unix:" + path}
			if mode != "" {
				pairs = append(pairs, "socket_mode", mode)
			}
			srv, err := NewHTTPServer(localOf(pairs...), nil)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() {
				done <- srv.Serve(ctx, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "over unix") }))
			}()
			testsync.Recv(t, "the server to bind", srv.Bound())
			st, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]fs.FileMode{"": 0o660, "0600": 0o600, "0666": 0o666}[mode]
			if st.Mode().Type() != fs.ModeSocket || st.Mode().Perm() != want {
				t.Errorf("socket file mode %s, want a socket with %04o", st.Mode(), want)
			}
			if got := getBody(t, unixClient(path), "http://unix/"); got != "over unix" {
				t.Errorf("GET over the socket: %q", got)
			}
			cancel()
			if err := testsync.Recv(t, "Serve to return", done); err != nil {
				t.Errorf("Serve: %v", err)
			}
			if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("socket file left after shutdown: %v", err)
			}
		})
	}
}

// TestUnixSocketStale: a socket file nobody listens on is replaced; one a
// process still listens on, and a file that is not a socket, are refused
// and left alone, with errors naming the path.
func TestUnixSocketStale(t *testing.T) {
	t.Parallel()
	dir := sockDir(t)

	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	got, err := listen(UnixPrefix+stale, ListenOptions{})
	if err != nil {
		t.Fatalf("bind over a stale socket: %v", err)
	}
	got.Close()

	live := filepath.Join(dir, "live.sock")
	other, err := net.Listen("unix", live)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, err := listen(UnixPrefix+live, ListenOptions{}); !errors.Is(err, ErrSocketInUse) || !strings.Contains(err.Error(), live) {
		t.Errorf("bind over a live socket = %v, want ErrSocketInUse naming %s", err, live)
	}
	go func() {
		if c, err := other.Accept(); err == nil {
			c.Close()
		}
	}()
	if c, err := net.Dial("unix", live); err != nil {
		t.Errorf("the live socket no longer accepts: %v", err)
	} else {
		c.Close()
	}

	file := filepath.Join(dir, "file.sock")
	os.WriteFile(file, []byte("keep"), 0o644)
	if _, err := listen(UnixPrefix+file, ListenOptions{}); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("bind over a regular file = %v, want a refusal", err)
	}
	if b, _ := os.ReadFile(file); string(b) != "keep" {
		t.Error("the regular file was touched")
	}
}

// TestUnixSocketNeverWiderThanMode: the socket's file is never, not even
// for an instant, at PATH with a mode wider than socket_mode. It binds many
// times with the process umask 0 (the file a bind creates is then 0777:
// anyone on the machine may connect, and a connection accepted then stays)
// while a goroutine watches PATH in a tight loop. After each listen the file
// is a socket with exactly socket_mode, nothing else is left in its
// directory, and after Close nothing at all. Not parallel: the umask belongs
// to the process, and a test that is not parallel runs alone.
func TestUnixSocketNeverWiderThanMode(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	dir := sockDir(t)
	path := filepath.Join(dir, "web.sock")
	const mode fs.FileMode = 0o600

	stop := make(chan struct{})
	wider := make(chan fs.FileMode, 1)
	go func() {
		defer close(wider)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if st, err := os.Lstat(path); err == nil && st.Mode().Perm()&^mode != 0 {
				wider <- st.Mode().Perm()
				return
			}
		}
	}()
	defer func() {
		close(stop)
		if m, ok := <-wider; ok {
			t.Errorf("%s was seen with mode %04o, wider than socket_mode %04o", path, m, mode)
		}
	}()
	for i := 0; i < 1000; i++ {
		ln, err := listen(UnixPrefix+path, ListenOptions{SocketMode: mode})
		if err != nil {
			t.Fatal(err)
		}
		st, err := os.Lstat(path)
		if err != nil || st.Mode().Type() != fs.ModeSocket || st.Mode().Perm() != mode {
			ln.Close()
			t.Fatalf("after listen: %v, %v; want a socket with mode %04o", st, err, mode)
		}
		if got := ln.Addr().String(); got != path {
			t.Errorf("Addr() = %q, want %q", got, path)
		}
		entries, _ := os.ReadDir(dir)
		ln.Close()
		if len(entries) != 1 {
			t.Fatalf("after listen, %s holds %d files (%v), want the socket only", dir, len(entries), entries)
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 0 {
			t.Fatalf("after Close, %s still holds %v", dir, entries)
		}
		select {
		case m, ok := <-wider:
			if ok {
				t.Fatalf("%s was seen with mode %04o, wider than socket_mode %04o (bind %d)", path, m, mode, i+1)
			}
		default:
		}
	}
}

// TestListenerPoolUnixHandOver: a unix socket in a ListenerPool is shared
// by two servers in turn like a TCP one (no connection refused), takes the
// new mode when a later server asks for another, and its file is removed
// when the pool prunes it.
func TestListenerPoolUnixHandOver(t *testing.T) {
	t.Parallel()
	path := filepath.Join(sockDir(t), "web.sock")
	addr := UnixPrefix + path
	pool := NewListenerPool()
	defer pool.Close()
	serve := func(v *ListenerView, mode fs.FileMode, name string) *http.Server {
		ln, err := v.Listen(addr, ListenOptions{SocketMode: mode})
		if err != nil {
			t.Fatal(err)
		}
		s := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, name) })}
		go s.Serve(ln)
		return s
	}
	v1 := pool.View()
	s1 := serve(v1, 0, "one")
	c := unixClient(path)
	if got := getBody(t, c, "http://unix/"); got != "one" {
		t.Fatalf("first server: %q", got)
	}
	if files := pool.SocketFiles(); len(files) != 1 || files[0] != path {
		t.Errorf("SocketFiles = %v", files)
	}
	s2 := serve(pool.View(), 0o600, "two")
	if st, _ := os.Stat(path); st == nil || st.Mode().Perm() != 0o600 {
		t.Errorf("mode after the second server asked for 0600: %v", st)
	}
	v1.Detach(time.Second)
	s1.Shutdown(context.Background())
	for i := range 20 {
		if got := getBody(t, c, "http://unix/"); got != "two" {
			t.Fatalf("request %d after the hand-over: %q", i, got)
		}
	}
	s2.Close()
	if pruned := pool.Prune(); len(pruned) != 1 || pruned[0] != addr {
		t.Errorf("Prune = %v, want [%s]", pruned, addr)
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket file left after Prune: %v", err)
	}
}

// TestListenerPoolAdopt: sockets adopted from systemd serve the servers
// that name them (systemd:NAME, systemd: when there is one, their address),
// are never bound again nor pruned, and a name shared by several sockets is
// an error that says so.
func TestListenerPoolAdopt(t *testing.T) {
	t.Parallel()
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(sockDir(t), "act.sock")
	unix, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	pool := NewListenerPool()
	defer pool.Close()
	pool.Adopt(map[string][]net.Listener{"web": {tcp}, "nginx": {unix}})
	for _, addr := range []string{"systemd:web", tcp.Addr().String(), "systemd:nginx", UnixPrefix + path} {
		ln, err := pool.Listen(addr, ListenOptions{})
		if err != nil {
			t.Errorf("Listen(%s): %v", addr, err)
			continue
		}
		if ln.Addr().String() != tcp.Addr().String() && ln.Addr().String() != path {
			t.Errorf("Listen(%s) took %s", addr, ln.Addr())
		}
		ln.Close()
	}
	if _, err := pool.Listen("systemd:", ListenOptions{}); err == nil {
		t.Error("systemd: with two sockets passed took one")
	}
	if _, err := pool.Listen("systemd:other", ListenOptions{}); err == nil || !strings.Contains(err.Error(), "systemd:other") {
		t.Errorf("an unknown name = %v, want an error naming it", err)
	}
	if pruned := pool.Prune(); len(pruned) != 0 {
		t.Errorf("Prune closed adopted sockets: %v", pruned)
	}

	a, _ := net.Listen("tcp", "127.0.0.1:0")
	b, _ := net.Listen("tcp", "127.0.0.1:0")
	one, _ := net.Listen("tcp", "[::1]:0")
	two := NewListenerPool()
	defer two.Close()
	two.Adopt(map[string][]net.Listener{"paster.socket": {a, b}})
	if _, err := two.Listen("systemd:paster.socket", ListenOptions{}); err == nil || !strings.Contains(err.Error(), "FileDescriptorName") {
		t.Errorf("a name of two sockets = %v, want an error pointing at FileDescriptorName", err)
	}
	if one != nil {
		single := NewListenerPool()
		defer single.Close()
		single.Adopt(map[string][]net.Listener{"LISTEN_FD_3": {one}})
		if ln, err := single.Listen("systemd:", ListenOptions{}); err != nil {
			t.Errorf("systemd: with one socket passed: %v", err)
		} else {
			ln.Close()
		}
	}
}
