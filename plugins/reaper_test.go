//go:build linux

package plugins

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/paster-dev/paster/internal/testsync"
)

// spawn has the plugin start a child in its own session and a double-forked
// grandchild in another, and returns their PIDs; they are killed at the
// end of the test whatever happens.
func spawn(t *testing.T, url string) (int, int) {
	t.Helper()
	code, body := get(t, url+"/spawn")
	var a, b int
	if f := strings.Fields(body); code != 200 || len(f) != 2 {
		t.Fatalf("spawn: %d %q", code, body)
	} else {
		a, _ = strconv.Atoi(f[0])
		b, _ = strconv.Atoi(f[1])
	}
	t.Cleanup(func() {
		_ = syscall.Kill(a, syscall.SIGKILL)
		_ = syscall.Kill(b, syscall.SIGKILL)
	})
	for _, pid := range []int{a, b} {
		// setsid(1) runs in the forked process before it executes sleep.
		testsync.WaitFor(t, fmt.Sprintf("spawned process %d to run in a process group of its own", pid), func() bool {
			pgid, err := syscall.Getpgid(pid)
			return err == nil && pgid == pid && alive(pid)
		})
	}
	return a, b
}

// ppid returns the parent of pid (0 when it is gone).
func ppid(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	n, _ := strconv.Atoi(f[1])
	return n
}

// TestChildrenDieWithHost: processes a plugin started in process groups
// and sessions of their own, one of them double-forked, are gone soon after
// the host is killed with SIGKILL.
func TestChildrenDieWithHost(t *testing.T) {
	t.Parallel()
	host, plugin, url := startHostHelper(t)
	a, b := spawn(t, url)
	_ = host.Process.Kill()
	_ = host.Wait()
	testsync.WaitFor(t, "the plugin and the processes it started to die with the host", func() bool {
		return !alive(plugin) && !alive(a) && !alive(b)
	})
}

// TestSubreaper: an orphan of the plugin is reparented to the plugin and
// reaped when it exits; the plugin's own children keep their exit statuses
// for cmd.Wait; closing the host kills what the plugin started.
func TestSubreaper(t *testing.T) {
	t.Parallel()
	h := newHost(t, HostOptions{})
	_, srv := probe(t, h, "reaper")
	plugin := h.Plugins()[0].PID
	a, b := spawn(t, srv.URL)
	if p := ppid(b); p != plugin {
		t.Fatalf("double-forked process %d has parent %d, want the plugin %d", b, p, plugin)
	}
	if err := syscall.Kill(b, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testsync.WaitFor(t, "the orphan to be reaped", func() bool {
		_, err := os.Stat("/proc/" + strconv.Itoa(b))
		return os.IsNotExist(err)
	})
	mustGet(t, srv.URL+"/statuses?n=20", "20")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if alive(a) {
		t.Fatalf("process %d the plugin started outlives the closed host", a)
	}
}
