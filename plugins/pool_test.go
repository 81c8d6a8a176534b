package plugins

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/paster-dev/paster/entrypoints"
	"github.com/paster-dev/paster/internal/testsync"
)

// newPool returns a Pool closed at the end of the test.
func newPool(t *testing.T) *Pool {
	t.Helper()
	logs := &testsync.Buffer{}
	p := NewPool(HostOptions{Logger: hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Info}), PluginDirs: []string{binDir}})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := p.Close(ctx); err != nil {
			t.Errorf("Pool.Close: %v", err)
		}
		if t.Failed() {
			t.Logf("pool log:\n%s", logs.String())
		}
	})
	return p
}

// fdsTo counts the descriptors process pid has open on path.
func fdsTo(t *testing.T, pid int, path string) int {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	fds, err := os.ReadDir(dir)
	if err != nil {
		t.Skipf("cannot read %s: %v", dir, err)
	}
	n := 0
	for _, fd := range fds {
		if target, err := os.Readlink(filepath.Join(dir, fd.Name())); err == nil && target == path {
			n++
		}
	}
	return n
}

// TestScopeClose: two scopes share one plugin process; closing one
// destroys exactly the instances it created — the plugin drops them and
// closes the one that holds a file open — while the other's serve on in
// the same process; closing the last stops the process.
func TestScopeClose(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newPool(t)
	a, b := pool.Scope(1), pool.Scope(2)
	dir := t.TempDir()
	fileA, fileB := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	da, err := a.Binary(bin("ptest"), entrypoints.Origin{})
	if err != nil {
		t.Fatal(err)
	}
	db, err := b.Binary(bin("ptest"), entrypoints.Origin{})
	if err != nil {
		t.Fatal(err)
	}
	kept, err := da.Apps["file"](nil, entrypoints.NewLocal("path", fileA))
	if err != nil {
		t.Fatal(err)
	}
	gone, err := db.Apps["file"](nil, entrypoints.NewLocal("path", fileB))
	if err != nil {
		t.Fatal(err)
	}
	infos := pool.Plugins()
	if len(infos) != 1 || infos[0].Instances != 2 || fmt.Sprint(infos[0].Scopes) != "[1 2]" {
		t.Fatalf("plugins %+v, want one process with 2 instances held by scopes 1 and 2", infos)
	}
	pid := infos[0].PID
	if n, err := pool.ProcessInstances(ctx); err != nil || n[pid] != 2 {
		t.Fatalf("the plugin holds %v instances (%v), want 2", n, err)
	}
	goneURL := serve(t, gone).URL
	mustGet(t, goneURL, fileB)
	if n := fdsTo(t, pid, fileB); n != 1 {
		t.Fatalf("%d descriptors on %s in the plugin, want 1", n, fileB)
	}

	if err := b.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := pool.ProcessInstances(ctx); err != nil || n[pid] != 1 {
		t.Errorf("after closing scope 2 the plugin holds %v instances (%v), want 1", n, err)
	}
	if n := fdsTo(t, pid, fileB); n != 0 {
		t.Errorf("%d descriptors on %s in the plugin after its scope closed, want 0 (the app's Close)", n, fileB)
	}
	if code, body := get(t, goneURL); code == http.StatusOK {
		t.Errorf("an instance of the closed scope still answers: %d %q", code, body)
	}
	mustGet(t, serve(t, kept).URL, fileA)
	if infos := pool.Plugins(); len(infos) != 1 || infos[0].PID != pid || fmt.Sprint(infos[0].Scopes) != "[1]" {
		t.Errorf("plugins %+v, want process %d held by scope 1", infos, pid)
	}
	if _, err := db.Apps["file"](nil, entrypoints.NewLocal("path", fileB)); !errors.Is(err, ErrUnavailable) {
		t.Errorf("creating through a closed scope: %v, want ErrUnavailable", err)
	}
	if _, err := b.Binary(bin("ptest"), entrypoints.Origin{}); !errors.Is(err, ErrUnavailable) {
		t.Errorf("resolving through a closed scope: %v, want ErrUnavailable", err)
	}
	if err := b.Close(ctx); err != nil {
		t.Errorf("closing again: %v", err)
	}

	if err := a.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if infos := pool.Plugins(); len(infos) != 0 {
		t.Errorf("plugins %+v after every scope closed, want none", infos)
	}
	if alive(pid) {
		t.Errorf("plugin process %d alive after its last scope closed", pid)
	}
}

// TestScopeBinaryChange: a scope that names a binary whose file changed
// gets a new process beside the old one, which serves the older scope
// until it closes.
func TestScopeBinaryChange(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newPool(t)
	exe := filepath.Join(t.TempDir(), BinaryPrefix+"ptest")
	copyFile(t, bin("ptest"), exe)
	old := pool.Scope(1)
	if _, err := old.Binary(exe, entrypoints.Origin{}); err != nil {
		t.Fatal(err)
	}
	same := pool.Scope(2)
	if _, err := same.Binary(exe, entrypoints.Origin{}); err != nil {
		t.Fatal(err)
	}
	if infos := pool.Plugins(); len(infos) != 1 {
		t.Fatalf("an unchanged binary: %d processes, want 1", len(infos))
	}
	// Rebuilt (as go build does: a new file renamed over the old one),
	// with other content: a trailing byte, so another SHA-256.
	b, err := os.ReadFile(bin("ptest"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(exe+".new", append(b, 0), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(exe+".new", exe); err != nil {
		t.Fatal(err)
	}
	changed := pool.Scope(3)
	if _, err := changed.Binary(exe, entrypoints.Origin{}); err != nil {
		t.Fatal(err)
	}
	infos := pool.Plugins()
	if len(infos) != 2 {
		t.Fatalf("a changed binary: %d processes, want 2: %+v", len(infos), infos)
	}
	for _, s := range []*Scope{old, same} {
		if err := s.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if infos := pool.Plugins(); len(infos) != 1 || fmt.Sprint(infos[0].Scopes) != "[3]" {
		t.Errorf("after the old scopes closed: %+v, want the new process alone", infos)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o755); err != nil {
		t.Fatal(err)
	}
}
