//go:build linux

package plugins

import (
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/paster-dev/paster/internal/testsync"
	"github.com/paster-dev/paster/plugins/internal/wire"
)

// A plugin whose host is gone exits, also when nothing sent it the
// host's Pdeathsig: here its parent is a shell, killed with SIGKILL. (On
// Linux it waits on a pidfd of its parent, exitOf, rather than looking
// five times a second: an idle hello plugin's threads switched 22-32
// times in 3 s instead of 74-88 on a quiet machine; a count, which load
// on the machine moves, so not asserted here.)
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

	if err := sh.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = sh.Wait()
	testsync.WaitFor(t, "the plugin to exit with its parent", func() bool { return !alive(pid) })
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
