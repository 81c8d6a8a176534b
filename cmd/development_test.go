package pastercmd

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
)

// TestDevelopmentINI serves the repository's development.ini itself (with
// port 8080 rewritten to a free port, everything else as shipped): the
// seed's wait page and signal through the chat plugin's hijacked_runner,
// and the /health and /metrics mounts with what operators read from them.
func TestDevelopmentINI(t *testing.T) {
	t.Parallel()
	dir := developmentDir(t, func(ini []byte) []byte {
		return regexp.MustCompile(`(?m)^port = 8080$`).ReplaceAll(ini, []byte("port = 0"))
	})

	cmd := exec.Command(filepath.Join(binDir, "paster"), "serve", "development.ini")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PASTER_PLUGIN_PATH=")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	// The server runs in the chat plugin; its "serving" line names the port
	// (a plugin's log fields come in any order).
	serving := regexp.MustCompile(`serving: .*\baddr=(127\.0\.0\.1:\d+)`)
	lines := bufio.NewScanner(stderr)
	var base string
	for base == "" && lines.Scan() {
		if m := serving.FindStringSubmatch(lines.Text()); m != nil {
			base = "http://" + m[1]
		}
	}
	if base == "" {
		t.Fatal("paster serve ended without serving")
	}
	go io.Copy(io.Discard, stderr)

	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	// The wait page streams its first line, then ends with the signal's
	// message once /wait/signal sends it (min=1: after the waiter parked).
	resp, err := http.Get(base + "/wait/")
	if err != nil {
		t.Fatal(err)
	}
	page1 := bufio.NewReader(resp.Body)
	if line, err := page1.ReadString('\n'); err != nil || line != "I'm waiting for some signal<br>\n" {
		t.Fatalf("first line %q, %v", line, err)
	}
	if code, body := get("/wait/signal?message=%3Cb%3Ehi%3C/b%3E&min=1"); code != 200 || body != "Signalled 1 waiter(s)\n" {
		t.Fatalf("signal: %d %q", code, body)
	}
	rest, _ := io.ReadAll(page1)
	resp.Body.Close()
	if string(rest) != "Someone signaled me with this message: &lt;b&gt;hi&lt;/b&gt;\n" {
		t.Fatalf("wait page ended with %q", rest)
	}

	if code, body := get("/health/ready"); code != 200 || !strings.HasPrefix(body, "ready") {
		t.Fatalf("/health/ready: %d %q", code, body)
	}
	_, body := get("/health/")
	var health struct {
		Ready      bool `json:"ready"`
		Coroutines []struct {
			Name, State string
		} `json:"coroutines"`
		Plugins []struct {
			Dist, State string
		} `json:"plugins"`
	}
	if err := json.Unmarshal([]byte(body), &health); err != nil {
		t.Fatalf("/health/ is not JSON: %v\n%s", err, body)
	}
	coroutines := map[string]string{}
	for _, c := range health.Coroutines {
		coroutines[c.Name] = c.State
	}
	if !health.Ready || coroutines["heartbeat"] == "" || coroutines["app:chat/roster"] == "" || len(health.Plugins) != 5 {
		t.Errorf("/health/: %s", body)
	}

	_, metrics := get("/metrics")
	for _, want := range []string{
		`paster_http_requests_total{app="/wait",code="200"} 2`,
		`paster_http_request_duration_seconds_bucket{app="/wait",`,
		// The hop from the host to the waitapp plugin (the request came
		// from the server inside the chat plugin).
		`paster_plugin_hop_duration_seconds_count{dist="waitapp"} `,
		`paster_plugin_hop_received_bytes_total{dist="waitapp"} `,
		"paster_http_requests_in_flight",
		"paster_core_parked",
		`paster_coroutine_state{coroutine="heartbeat"`,
		"paster_coroutine_restarts_total",
		`paster_plugin_up{dist="chat"`,
		"paster_plugin_restarts_total",
		"paster_reloads_total",
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("serve after SIGTERM: %v", err)
	}
}

// developmentDir returns a temporary directory holding the repository's
// development.ini, passed through edit, and the static page it serves.
func developmentDir(t *testing.T, edit func(ini []byte) []byte) string {
	t.Helper()
	dir := t.TempDir()
	ini, err := os.ReadFile("../development.ini")
	if err != nil {
		t.Fatal(err)
	}
	page, err := os.ReadFile("../examples/static/index.html")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "examples", "static"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "examples", "static", "index.html"), page, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "development.ini"), edit(ini), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}
