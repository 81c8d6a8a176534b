package pastercmd

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/paster-dev/paster/internal/testsync"
)

// swapINI serves a static file through the server section's runner, which
// each step of TestReloadSwapRunners changes.
const swapINI = `[server:main]
use = %s
host = 127.0.0.1
port = %d
shutdown_timeout = 5
%s
[composite:main]
use = egg:paster#urlmap
/ = files
/health = health

[app:files]
use = egg:paster#static
document_root = .

[app:health]
use = egg:paster#health
`

// TestReloadSwapRunners swaps the server runner under continuous load, in
// every direction a server can move between processes: from the built-in
// http runner to a plugin runner, between plugin runners in two binaries,
// to a rebuilt binary of the same runner, and back to the built-in runner.
// The host owns the listening socket and lends it to plugin processes, so
// each new server accepts on it before the old one stops: no request fails
// and no connection is refused. Run with SIGHUP and with --reload.
func TestReloadSwapRunners(t *testing.T) {
	t.Parallel()
	buildPlugin(t, "chat")
	chat, err := os.ReadFile(filepath.Join(binDir, "plugins", "paster-plugin-chat"))
	if err != nil {
		t.Fatal(err)
	}
	const (
		builtin = "egg:paster#http"
		pluginA = "egg:chat#hijacked_runner"                        // found in bin/ (--plugin-dir)
		pluginB = "plugin:other/paster-plugin-chat#hijacked_runner" // another binary file
	)
	steps := []struct {
		name    string
		use     string
		rebuild bool   // rewrite bin/paster-plugin-chat (another file, same runner)
		binary  string // the plugin binary of the server, "" for the built-in one
	}{
		{name: "built-in to plugin runner", use: pluginA, binary: "/bin/paster-plugin-chat"},
		{name: "plugin runner to plugin runner in another binary", use: pluginB, binary: "/other/paster-plugin-chat"},
		{name: "back to the first binary", use: pluginA, binary: "/bin/paster-plugin-chat"},
		{name: "plugin runner whose binary was rebuilt", use: pluginA, rebuild: true, binary: "/bin/paster-plugin-chat"},
		{name: "plugin runner to built-in", use: builtin},
	}
	for _, trigger := range []string{"SIGHUP", "--reload"} {
		t.Run(trigger, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			for _, sub := range []string{"bin", "other"} {
				if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, sub, "paster-plugin-chat"), chat, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			os.WriteFile(filepath.Join(dir, "hello"), []byte("hi\n"), 0o644)
			port := testsync.FreePort(t)
			ini := filepath.Join(dir, "dev.ini")
			write := func(use string, n int) {
				extra := ""
				if use != builtin {
					// A key of the hijacked runner: each step's section
					// differs from the last even when the runner does not.
					extra = fmt.Sprintf("tick_interval = %d\n", 30+n)
				}
				tmp := ini + ".tmp"
				os.WriteFile(tmp, fmt.Appendf(nil, swapINI, use, port, extra), 0o644)
				if err := os.Rename(tmp, ini); err != nil {
					t.Fatal(err)
				}
			}
			write(builtin, 0)
			args := []string{"dev.ini", "--plugin-dir", "bin"}
			if trigger == "--reload" {
				args = append(args, "--reload", "--reload-interval", "100ms")
			}
			p := startServe(t, dir, port, args...)
			l := startLoad(p.base, "/hello", 4)
			p.waitFor("load to be served", func() bool { return l.seen("hi\n") })
			pid := 0 // of the plugin process the server runs in
			for i, st := range steps {
				n := i + 1
				failed := l.non2xx.Load() + l.errs.Load()
				if st.rebuild {
					bin := filepath.Join(dir, "bin", "paster-plugin-chat")
					if err := os.WriteFile(bin+".tmp", append(append([]byte(nil), chat...), "rebuilt"...), 0o755); err != nil {
						t.Fatal(err)
					}
					if err := os.Rename(bin+".tmp", bin); err != nil {
						t.Fatal(err)
					}
				} else {
					write(st.use, n)
				}
				if trigger == "SIGHUP" {
					p.cmd.Process.Signal(syscall.SIGHUP)
				}
				h := p.waitReload(n)
				if h.Reloads.Failed != 0 || h.Generation != n+1 {
					t.Fatalf("%s: generation %d, reloads %+v; want generation %d and no failure", st.name, h.Generation, h.Reloads, n+1)
				}
				// The old server has stopped once its generation drained;
				// requests go on after that.
				p.waitFor(st.name+": the old generation drained", func() bool {
					return strings.Contains(p.log.String(), fmt.Sprintf("generation drained: generation=%d ", n))
				})
				if st.binary != "" {
					now := pluginPID(h, st.binary)
					if now == 0 || now == pid {
						t.Errorf("%s: the server's plugin process is %d, before %d; want a new process of %s", st.name, now, pid, st.binary)
					}
					pid = now
				}
				sent := l.sent.Load()
				p.waitFor(st.name+": requests after the switch", func() bool { return l.sent.Load() > sent+100 })
				if now := l.non2xx.Load() + l.errs.Load(); now != failed {
					t.Errorf("%s: %d requests failed (first failure of the run: %s)", st.name, now-failed, l.firstErr)
				}
			}
			l.finish(t)
			if n := strings.Count(p.log.String(), "starting the new server beside the old one"); n != len(steps) {
				t.Errorf("%d server switches beside the old one, want %d", n, len(steps))
			}
		})
	}
}
