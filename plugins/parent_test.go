//go:build linux

package plugins

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/paster-dev/paster/internal/testsync"
	"github.com/paster-dev/paster/plugins/internal/wire"
)

// A plugin whose host is gone exits, also when nothing sent it the
// host's Pdeathsig (here its parent is a shell, killed with SIGKILL), and
// watching for it does not wake the idle plugin: its threads' voluntary
// context switches over idleWindow stay at half of what looking five
// times a second cost (74-88 in 3 s, against 22-32 with the pidfd).
func TestPluginExitsWithParent(t *testing.T) {
	t.Parallel()
	sh := exec.Command("sh", "-c", `"$0" & echo $!; wait`, bin("hello"))
	sh.Env = append(os.Environ(), wire.MagicCookieKey+"="+wire.MagicCookieValue)
	pid, r := startForPID(t, sh)
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
	// Serving: go-plugin's handshake line on stdout.
	if line, err := r.ReadString('\n'); err != nil || !strings.Contains(line, "|grpc") {
		t.Fatalf("plugin handshake: %q, %v", line, err)
	}

	// Starting wakes it often (go-plugin, the runtime, procs sampling
	// every procsTick until it backs off): wait for a quiet half second.
	testsync.WaitFor(t, "the plugin to settle", func() bool {
		before := voluntarySwitches(t, pid)
		time.Sleep(500 * time.Millisecond)
		return voluntarySwitches(t, pid)-before <= 10
	})
	const idleWindow = 3 * time.Second
	before := voluntarySwitches(t, pid)
	time.Sleep(idleWindow) // the measurement itself: the plugin left idle
	if n := voluntarySwitches(t, pid) - before; n > 44 {
		t.Errorf("the idle plugin's threads switched voluntarily %d times in %v, want at most 44", n, idleWindow)
	} else {
		t.Logf("%d voluntary context switches in %v idle", n, idleWindow)
	}

	if err := sh.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = sh.Wait()
	testsync.WaitFor(t, "the plugin to exit with its parent", func() bool { return !alive(pid) })
}

// voluntarySwitches sums the voluntary context switches of pid's threads.
func voluntarySwitches(t *testing.T, pid int) int64 {
	t.Helper()
	dirs, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, d := range dirs {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, d.Name()))
		if err != nil {
			continue // the thread exited meanwhile
		}
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "voluntary_ctxt_switches:"); ok {
				k, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				n += k
			}
		}
	}
	return n
}

// exitOf's channel stays open while the process lives and closes once it
// exited (a zombie not yet waited for counts as exited).
func TestExitOf(t *testing.T) {
	t.Parallel()
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	gone := exitOf(cmd.Process.Pid)
	if gone == nil {
		t.Skip("no pidfds here")
	}
	select {
	case <-gone:
		t.Fatal("closed while the process lives")
	case <-time.After(200 * time.Millisecond):
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-gone:
	case <-time.After(10 * time.Second):
		t.Fatal("not closed 10s after the process was killed")
	}
}
