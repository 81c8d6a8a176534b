package plugins

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/paster-dev/paster/entrypoints"
)

// TestStartFailureReported: a binary that ends at start is reported with
// how it ended and the last lines of its stderr, not with go-plugin's
// "Unrecognized remote plugin message".
func TestStartFailureReported(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cases := []struct {
		name, script string
		mention      []string
		absent       string
	}{
		{"exits 3 after stderr", "echo 'reading /etc/app.conf' >&2\necho 'fatal: no database configured' >&2\nexit 3\n",
			[]string{"exited with status 3 before the plugin handshake", "plugins.Serve",
				"the last lines of its stderr:\n\treading /etc/app.conf\n\tfatal: no database configured"}, ""},
		{"killed by a signal", "echo 'about to crash' >&2\nkill -SEGV $$\n",
			[]string{"was killed by signal segmentation fault before the plugin handshake", "about to crash"}, ""},
		{"long stderr", "i=0; while [ $i -lt 50 ]; do echo line $i >&2; i=$((i+1)); done; exit 1\n",
			[]string{"exited with status 1", "\tline 40\n", "\tline 49"}, "line 39\n"},
		{"Go crash report", "echo 'panic: no config' >&2\necho >&2\ni=0; while [ $i -lt 30 ]; do printf '\\tframe %d\\n' $i >&2; i=$((i+1)); done; exit 2\n",
			[]string{"exited with status 2", "stderr:\n\tpanic: no config\n\t...\n\t\tframe 20\n", "\tframe 29"}, "frame 19"},
		// stderr first: the host stops the process once it read stdout.
		{"stdout garbage", "echo 'unknown flag' >&2\necho 'usage: tool [flags]'\nexit 2\n",
			[]string{"usage: tool [flags]", "unknown flag"}, ""},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(dir, "plugin"+strconv.Itoa(i))
			if err := os.WriteFile(path, []byte("#!/bin/sh\n"+c.script), 0o755); err != nil {
				t.Fatal(err)
			}
			h := newHost(t, HostOptions{StartTimeout: 20 * time.Second})
			_, err := h.Binary(path, entrypoints.Origin{})
			checkErr(t, err, ErrNotPlugin, append(c.mention, path))
			if c.absent != "" && strings.Contains(err.Error(), c.absent) {
				t.Errorf("error %q keeps more than the last lines (%q)", err, c.absent)
			}
			// go-plugin's own lines name the binary, not the descriptor
			// it was executed from.
			if logs := h.logs.String(); strings.Contains(logs, "/proc/self/fd") || !strings.Contains(logs, path) {
				t.Errorf("host log does not name %s:\n%s", path, logs)
			}
		})
	}
}

// TestFactoryPanic: a factory that panics in the plugin fails the load with
// the panic value and the section, and the plugin process serves on.
func TestFactoryPanic(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ini := filepath.Join(dir, "app.ini")
	conf := "[app:main]\nuse = plugin:" + bin("ptest") + "#panicky\ngreeting = hi\n"
	if err := os.WriteFile(ini, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	h := newHost(t, HostOptions{})
	_, srv := probe(t, h, "before")
	pid := h.Plugins()[0].PID
	s := &entrypoints.Session{Resolver: h.Host}
	_, err := s.LoadApp("config:"+ini, dir, nil)
	checkErr(t, err, entrypoints.ErrFactory, []string{"app.ini:2 [app:main]", `creating paste.app_factory "panicky": panic in the factory, section app.ini:3 [app:main]: factory boom`})
	if p := h.Plugins()[0]; p.PID != pid || p.State != StateRunning {
		t.Fatalf("plugin after the panic: %+v, want pid %d running", p, pid)
	}
	mustGet(t, srv.URL+"/name", "before")
}
