package pastercmd

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/paster-dev/paster/internal/testsync"
)

// binDir holds the paster binary built for these tests and, in its plugins
// directory, the example plugins, which paster finds next to itself (so the
// tests never depend on a bin/ directory of the working tree).
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "paster-cmd-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	build := exec.Command("go", "build", "-o", filepath.Join(dir, "paster"), "./paster")
	build.Stderr = os.Stderr
	plugins := exec.Command("go", "build", "-o", filepath.Join(dir, "plugins")+"/", "../examples/...")
	plugins.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building paster:", err)
		os.Exit(1)
	}
	if err := plugins.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the hello plugin:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// paster runs the built paster binary with args in dir and returns its
// stdout, stderr and exit status.
func paster(t *testing.T, dir string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "paster"), args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PASTER_PLUGIN_PATH=")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		return stdout.String(), stderr.String(), exit.ExitCode()
	case err != nil:
		t.Fatalf("running paster %v: %v", args, err)
	}
	return stdout.String(), stderr.String(), 0
}

func TestCheck(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		dir    string
		args   []string
		exit   int
		stdout []string // substrings expected on stdout
		stderr []string // substrings expected on stderr
		absent []string // substrings expected on neither
	}{
		{
			name: "development.ini",
			dir:  "..",
			args: []string{"check", "development.ini"},
			stdout: []string{
				"[server:main]", "[composite:main] egg:paster#urlmap", "[app:hello] egg:hello#main",
				"not used: development.ini:37 [server:plain]", "ok",
			},
		},
		{
			name:   "tree of a small composition",
			dir:    "paster",
			args:   []string{"check", "testdata/good.ini"},
			stdout: []string{"[server:main] egg:paster#http", "[filter:log] egg:paster#translogger", "[app:files] egg:paster#static", "global who = tests", "ok"},
		},
		{
			name: "misspelt use names file, line, section, key and a suggestion",
			dir:  "paster",
			args: []string{"check", "testdata/misspelt.ini"},
			exit: 1,
			stderr: []string{
				"testdata/misspelt.ini:10 [app:home] use=hoem-base",
				`no application section "hoem-base"`,
				`did you mean "home-base"?`,
			},
		},
		{
			name:   "use cycle is printed",
			dir:    "paster",
			args:   []string{"check", "testdata/cycle.ini"},
			exit:   1,
			stderr: []string{"reference cycle: [app:main] use=a → [app:a] use=b → [app:b] use=main → [app:main]"},
		},
		{
			name:   "missing file",
			dir:    "paster",
			args:   []string{"check", "testdata/nope.ini"},
			exit:   1,
			stderr: []string{"testdata/nope.ini"},
		},
		{
			name:   "variable without =",
			dir:    "paster",
			args:   []string{"check", "testdata/good.ini", "port"},
			exit:   2,
			stderr: []string{`variable assignment "port" invalid (no "=")`},
		},
		{
			name:   "no config",
			dir:    ".",
			args:   []string{"check"},
			exit:   2,
			stderr: []string{"you must give a config file"},
		},
		{
			name:   "check -h shows only check's options",
			dir:    ".",
			args:   []string{"check", "-h"},
			stderr: []string{"usage: paster check", "-json", "-app-name", "-plugin-dir", "section NAME or URI to check", `(default "warn")`},
			absent: []string{"  -reload\n", "  -reload-interval", "  -daemon\n", "  -pid-file", "  -monitor-restart", "  -stop-daemon", "  -status", "--daemon", "to serve"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			stdout, stderr, exit := paster(t, tc.dir, tc.args...)
			if exit != tc.exit {
				t.Fatalf("exit status %d, want %d\nstdout:\n%s\nstderr:\n%s", exit, tc.exit, stdout, stderr)
			}
			for _, want := range tc.stdout {
				if !strings.Contains(stdout, want) {
					t.Errorf("stdout lacks %q:\n%s", want, stdout)
				}
			}
			for _, want := range tc.stderr {
				if !strings.Contains(stderr, want) {
					t.Errorf("stderr lacks %q:\n%s", want, stderr)
				}
			}
			for _, not := range tc.absent {
				if strings.Contains(stdout+stderr, not) {
					t.Errorf("output has %q:\n%s%s", not, stdout, stderr)
				}
			}
		})
	}
}

func TestCheckJSON(t *testing.T) {
	t.Parallel()
	stdout, stderr, exit := paster(t, "paster", "check", "--json", "testdata/good.ini", "who=caller")
	if exit != 0 {
		t.Fatalf("exit %d: %s", exit, stderr)
	}
	var report struct {
		Files []string `json:"files"`
		Roots []struct {
			Kind       string            `json:"kind"`
			Section    string            `json:"section"`
			EntryPoint string            `json:"entry_point"`
			Global     map[string]string `json:"global"`
		} `json:"roots"`
	}
	if err := json.Unmarshal([]byte(stdout), &report); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, stdout)
	}
	if len(report.Roots) != 2 || report.Roots[0].Kind != "server" || report.Roots[1].Kind != "application" {
		t.Fatalf("want a server root then an application root, got %+v", report.Roots)
	}
	// The caller's var=value beats [DEFAULT] in the global conf factories get.
	if got := report.Roots[1].Global["who"]; got != "caller" {
		t.Errorf("global who = %q, want caller", got)
	}
	if len(report.Files) != 1 || !strings.HasSuffix(report.Files[0], "testdata/good.ini") {
		t.Errorf("files = %v", report.Files)
	}
}

func TestPoints(t *testing.T) {
	t.Parallel()
	stdout, stderr, exit := paster(t, ".", "points")
	if exit != 0 {
		t.Fatalf("exit %d: %s", exit, stderr)
	}
	for _, want := range []string{
		"paster ", "(compiled in)",
		"composites:     cascade, urlmap",
		"filter-apps:    cors, gzip, limits, prefix, ratelimit, request_id, translogger",
		"server runners: http",
		"hello 0.1.0 (" + filepath.Join(binDir, "plugins", "paster-plugin-hello") + ")",
		"coroutines:     ticker",
		"cores:          memory, nats",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("points output lacks %q:\n%s", want, stdout)
		}
	}

	stdout, _, exit = paster(t, ".", "points", "--json")
	var dists []distPoints
	if exit != 0 || json.Unmarshal([]byte(stdout), &dists) != nil {
		t.Fatalf("points --json: exit %d, output:\n%s", exit, stdout)
	}
	found := map[string]distPoints{}
	for _, d := range dists {
		found[d.Name] = d
	}
	if got := found["paster"].Points["apps"]; !slices.Contains(got, "static") {
		t.Errorf("paster apps = %v", got)
	}
	if got := found["hello"].Points["filters"]; len(got) != 1 || got[0] != "stamp" {
		t.Errorf("hello filters = %v", got)
	}
}

// TestVersion: paster has one version string, the same in `paster version`
// and in the built-in dist that `paster points` (and the plugin protocol's
// manifests) show.
func TestVersion(t *testing.T) {
	t.Parallel()
	stdout, _, exit := paster(t, ".", "version")
	if exit != 0 || !strings.HasPrefix(stdout, "paster ") {
		t.Fatalf("version: exit %d, %q", exit, stdout)
	}
	version := strings.TrimSpace(strings.TrimPrefix(stdout, "paster "))
	out, _, exit := paster(t, ".", "points", "--json")
	var dists []distPoints
	if exit != 0 || json.Unmarshal([]byte(out), &dists) != nil {
		t.Fatalf("points --json: exit %d, output:\n%s", exit, out)
	}
	for _, d := range dists {
		if d.Name == "paster" && d.Version != version {
			t.Errorf("paster version says %q; dist paster says %q", version, d.Version)
		}
	}
}

// TestServeLogsToFile: --log-file and --log-format json capture the lines of
// library code too (the http runner's "serving"), and SIGTERM ends serve
// with status 0.
func TestServeLogsToFile(t *testing.T) {
	t.Parallel()
	logFile := filepath.Join(t.TempDir(), "paster.log")
	cmd := exec.Command(filepath.Join(binDir, "paster"), "serve", "testdata/good.ini", "--log-file", logFile, "--log-format", "json")
	cmd.Dir = "paster" // the stock command's directory holds the test configurations
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()

	var addr string
	testsync.WaitFor(t, "the serving line in the log file", func() bool {
		b, _ := os.ReadFile(logFile)
		for _, line := range strings.Split(string(b), "\n") {
			var rec map[string]any
			if json.Unmarshal([]byte(line), &rec) == nil && rec["@message"] == "serving" && rec["addr"] != nil {
				addr = rec["addr"].(string)
				return true
			}
		}
		return false
	})
	resp, err := http.Get("http://" + addr + "/good.ini")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /good.ini: %s", resp.Status)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("serve after SIGTERM: %v", err)
	}
	b, _ := os.ReadFile(logFile)
	if !strings.Contains(string(b), `"GET /good.ini HTTP/1.1\" 200`) {
		t.Errorf("the access log line is not in the log file:\n%s", b)
	}
}
