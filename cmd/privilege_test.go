package pastercmd

import (
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/paster-dev/paster/internal/testsync"
)

// privilegedPort returns a loopback port below 1024 that was free a moment
// ago (only root may bind it).
func privilegedPort(t *testing.T) int {
	t.Helper()
	for port := 900; port < 1024; port++ {
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			ln.Close()
			return port
		}
	}
	t.Skip("no free port below 1024 on 127.0.0.1")
	return 0
}

// procIDs returns the Uid and Gid lines of /proc/PID/status (real,
// effective, saved, filesystem ids).
func procIDs(t *testing.T, pid int) (uid, gid string) {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatalf("process %d: %v", pid, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Uid:"); ok {
			uid = strings.Join(strings.Fields(v), " ")
		}
		if v, ok := strings.CutPrefix(line, "Gid:"); ok {
			gid = strings.Join(strings.Fields(v), " ")
		}
	}
	return uid, gid
}

// TestPrivilegeDrop runs paster serve as root with --user nobody: it binds a
// port below 1024 first, then paster and its plugin process run as nobody
// (every uid and gid of /proc/PID/status), the log file opened before the
// drop keeps being written, a plugin binary rebuilt after the drop starts
// as nobody through the pinned /proc/self/fd exec, one made writable by
// others is still refused, and the pid file that nobody may not remove is
// reported at exit.
func TestPrivilegeDrop(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("dropping privileges takes root; the test runs as uid", os.Geteuid())
	}
	t.Parallel()
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Skipf("no user nobody: %v", err)
	}
	want := fmt.Sprintf("%s %s %s %s", nobody.Uid, nobody.Uid, nobody.Uid, nobody.Uid)
	wantGID := fmt.Sprintf("%s %s %s %s", nobody.Gid, nobody.Gid, nobody.Gid, nobody.Gid)

	dir := t.TempDir()
	// nobody reads the INI file and opens the plugin binary after the
	// drop: the directories must let it through (not write).
	for d := dir; d != filepath.Dir(d) && strings.HasPrefix(d, os.TempDir()+"/"); d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	v := iniVars{port: privilegedPort(t), shutdown: 5, greeting: "Hello"}
	writeINI(t, filepath.Join(dir, "dev.ini"), v)
	copyPlugin(t, dir, "")
	logFile := filepath.Join(dir, "paster.log")
	p := startServe(t, dir, v.port, "dev.ini", "--user", "nobody", "--log-file", logFile, "--pid-file", filepath.Join(dir, "paster.pid"))
	if code, body := p.get("/hello"); code != 200 || body != "Hello, reload!\n" {
		t.Fatalf("GET /hello: %d %q", code, body)
	}
	h := p.health()
	plugin := pluginPID(h, "/paster-plugin-hello")
	for name, pid := range map[string]int{"paster": p.cmd.Process.Pid, "its plugin": plugin} {
		if uid, gid := procIDs(t, pid); uid != want || gid != wantGID {
			t.Errorf("%s (pid %d) runs as Uid %q Gid %q, want %q and %q", name, pid, uid, gid, want, wantGID)
		}
	}

	// A rebuilt plugin binary: the new process starts after the drop.
	copyPlugin(t, dir, "rebuilt")
	p.cmd.Process.Signal(syscall.SIGHUP)
	h = p.waitReload(1)
	if h.Reloads.Failed != 0 {
		t.Fatalf("reload with a rebuilt plugin failed: %+v", h.Reloads)
	}
	now := pluginPID(h, "/paster-plugin-hello")
	if now == plugin || now == 0 {
		t.Fatalf("plugin pid %d after the rebuild, %d before; want a new process", now, plugin)
	}
	if uid, gid := procIDs(t, now); uid != want || gid != wantGID {
		t.Errorf("the restarted plugin runs as Uid %q Gid %q, want %q and %q", uid, gid, want, wantGID)
	}
	// The pin's refusal of a binary others may write still holds.
	copyPlugin(t, dir, "writable")
	os.Chmod(filepath.Join(dir, "paster-plugin-hello"), 0o757)
	p.cmd.Process.Signal(syscall.SIGHUP)
	if h := p.waitReload(2); h.Reloads.Failed != 1 || !strings.Contains(h.Reloads.LastError, "writable by others") {
		t.Errorf("reload with a plugin binary others may write: %+v", h.Reloads)
	}
	if code, _ := p.get("/hello"); code != 200 {
		t.Errorf("GET /hello after the refused reload: %d", code)
	}

	p.cmd.Process.Signal(syscall.SIGTERM)
	if err := <-p.done; err != nil {
		t.Errorf("paster serve: %v", err)
	}
	p.done <- nil
	log, _ := os.ReadFile(logFile)
	for _, w := range []string{"user=nobody uid=", "Starting server in PID", "pid file not removed"} {
		if !strings.Contains(string(log), w) {
			t.Errorf("log file lacks %q:\n%s", w, log)
		}
	}
}

// TestPrivilegeUnknownUser: an unknown --user, and an unknown [plugins]
// user (paster check names the file, line, section and key), are errors.
func TestPrivilegeUnknownUser(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	v := iniVars{port: testsync.FreePort(t), shutdown: 5, greeting: "Hello"}
	writeINI(t, filepath.Join(dir, "dev.ini"), v)
	copyPlugin(t, dir, "")
	_, stderr, code := paster(t, dir, "serve", "dev.ini", "--user", "no-such-user-here")
	if code != 1 || !strings.Contains(stderr, `no user "no-such-user-here"`) {
		t.Errorf("serve --user no-such-user-here: exit %d\n%s", code, stderr)
	}
	ini, _ := os.ReadFile(filepath.Join(dir, "dev.ini"))
	os.WriteFile(filepath.Join(dir, "dev.ini"), append(ini, "\n[plugins]\nuser = nobody\ngroup = no-such-group-here\n"...), 0o644)
	_, stderr, code = paster(t, dir, "check", "dev.ini")
	if code != 1 || !strings.Contains(stderr, `dev.ini:31 [plugins] group = "no-such-group-here"`) || !strings.Contains(stderr, "no group") {
		t.Errorf("check with [plugins] group = no-such-group-here: exit %d\n%s", code, stderr)
	}
}

// childrenOf returns the pids whose parent is pid.
func childrenOf(pid int) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if parentOf(n) == pid {
			out = append(out, n)
		}
	}
	return out
}

// TestPrivilegeDropPluginServer: the server runs in a plugin process
// (chat's hijacked_runner) on a unix socket in a directory only root may
// write: paster binds the socket as root, gives its file to nobody, and
// lends it to the plugin server, which runs as nobody like paster.
func TestPrivilegeDropPluginServer(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("dropping privileges takes root; the test runs as uid", os.Geteuid())
	}
	t.Parallel()
	buildPlugin(t, "chat")
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Skipf("no user nobody: %v", err)
	}
	dir := t.TempDir()
	for d := dir; d != filepath.Dir(d) && strings.HasPrefix(d, os.TempDir()+"/"); d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	os.WriteFile(filepath.Join(dir, "hello"), []byte("hi\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "dev.ini"), fmt.Appendf(nil, unixINI, "egg:chat#hijacked_runner", "0660", "tick_interval = 30\n"), 0o644)
	sock := filepath.Join(dir, "web.sock")
	p := spawnServe(t, dir, 0, "dev.ini", "--user", "nobody", "--plugin-dir", filepath.Join(binDir, "plugins"))
	p.base, p.dial = "http://paster", dialUnix(sock)
	p.waitFor("the plugin server to answer on the socket", func() bool {
		code, body := p.get("/hello")
		return code == 200 && body == "hi\n"
	})
	st, err := os.Lstat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if sys := st.Sys().(*syscall.Stat_t); strconv.Itoa(int(sys.Uid)) != nobody.Uid || st.Mode().Perm() != 0o660 {
		t.Errorf("socket file owned by uid %d, mode %04o; want nobody's (%s), 0660", sys.Uid, st.Mode().Perm(), nobody.Uid)
	}
	want := strings.TrimSpace(strings.Repeat(nobody.Uid+" ", 4))
	kids := childrenOf(p.cmd.Process.Pid)
	if len(kids) == 0 {
		t.Fatal("no plugin process under paster")
	}
	for _, pid := range append(kids, p.cmd.Process.Pid) {
		if uid, _ := procIDs(t, pid); uid != want {
			t.Errorf("process %d runs as Uid %q, want %q", pid, uid, want)
		}
	}
}
