package plugins

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/paster-dev/paster/entrypoints"
	"github.com/paster-dev/paster/internal/testsync"
)

// binDir holds the plugin binaries TestMain builds once for every test.
var binDir string

func TestMain(m *testing.M) {
	if os.Getenv("PASTER_TEST_HOST_HELPER") != "" {
		hostHelper()
		return
	}
	if os.Getenv(envProcsChild) != "" { // a test in a process of its own: no plugins
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "paster-plugins-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	cmd := exec.Command("go", "build", "-o", dir+"/",
		"github.com/paster-dev/paster/examples/hello/cmd/paster-plugin-hello",
		"github.com/paster-dev/paster/examples/wsecho/cmd/paster-plugin-wsecho",
		"github.com/paster-dev/paster/examples/upload/cmd/paster-plugin-upload",
		"github.com/paster-dev/paster/examples/waitapp/cmd/paster-plugin-waitapp",
		"github.com/paster-dev/paster/plugins/internal/testplugin/paster-plugin-ptest",
		"github.com/paster-dev/paster/plugins/internal/testplugin/paster-plugin-badversion",
	)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building test plugins:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// hostHelper is a host process for the tests that kill a host: it starts
// the ptest plugin, prints the plugin's PID, serves a probe instance on
// loopback, prints its URL and waits to be killed.
func hostHelper() {
	h := NewHost(HostOptions{Logger: hclog.NewNullLogger()})
	d, err := h.Binary(os.Getenv("PASTER_TEST_HOST_HELPER"), entrypoints.Origin{})
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	app, err := d.Apps["probe"](nil, entrypoints.Local{})
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println(h.Plugins()[0].PID)
	srv := httptest.NewServer(app)
	fmt.Println(srv.URL)
	select {}
}

func bin(name string) string { return filepath.Join(binDir, BinaryPrefix+name) }

type testHost struct {
	*Host
	logs *testsync.Buffer
}

// newHost returns a Host closed (and checked for leftover plugins) at the
// end of the test.
func newHost(t *testing.T, opts HostOptions) testHost {
	t.Helper()
	logs := &testsync.Buffer{}
	opts.Logger = hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Info})
	if opts.PluginDirs == nil {
		opts.PluginDirs = []string{binDir}
	}
	h := NewHost(opts)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var pids []int
		for _, p := range h.Plugins() {
			pids = append(pids, p.PID)
		}
		if err := h.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
		for _, pid := range pids {
			if pid != 0 && alive(pid) {
				t.Errorf("plugin process %d still alive after Close", pid)
			}
		}
		if t.Failed() {
			t.Logf("host log:\n%s", logs.String())
		}
	})
	return testHost{h, logs}
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

func serve(t *testing.T, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", url, err)
	}
	return resp.StatusCode, string(b)
}

// getLater GETs url in a goroutine of its own; the channel gets the
// response's status code, or -1 when the request failed.
func getLater(url string) <-chan int {
	code := make(chan int, 1)
	go func() {
		resp, err := http.Get(url)
		if err != nil {
			code <- -1
			return
		}
		resp.Body.Close()
		code <- resp.StatusCode
	}()
	return code
}

func mustGet(t *testing.T, url string, want string) {
	t.Helper()
	code, body := get(t, url)
	if code != http.StatusOK || body != want {
		t.Fatalf("GET %s = %d %q, want 200 %q", url, code, body, want)
	}
}

// probe starts a ptest probe app instance named name behind a test server.
func probe(t *testing.T, h testHost, name string) (*entrypoints.Dist, *httptest.Server) {
	t.Helper()
	return probeFrom(t, h, entrypoints.Origin{}, name)
}

// probeFrom is probe with the plugin referenced from from (its [plugins]).
func probeFrom(t *testing.T, h testHost, from entrypoints.Origin, name string) (*entrypoints.Dist, *httptest.Server) {
	t.Helper()
	d, app := probeAppFrom(t, h, from, name)
	return d, serve(t, app)
}

// probeApp starts a ptest probe app instance named name.
func probeApp(t *testing.T, h testHost, name string) (*entrypoints.Dist, http.Handler) {
	t.Helper()
	return probeAppFrom(t, h, entrypoints.Origin{}, name)
}

// probeAppFrom is probeApp with the plugin referenced from from.
func probeAppFrom(t *testing.T, h testHost, from entrypoints.Origin, name string) (*entrypoints.Dist, http.Handler) {
	t.Helper()
	d, err := h.Binary(bin("ptest"), from)
	if err != nil {
		t.Fatal(err)
	}
	app, err := d.Apps["probe"](nil, entrypoints.NewLocal("name", name))
	if err != nil {
		t.Fatal(err)
	}
	return d, app
}

// helloServer serves app on a loopback port with the hello plugin's http
// server (a server inside a plugin process), until the test ends, and
// returns its address.
func helloServer(t *testing.T, h testHost, app http.Handler) string {
	t.Helper()
	hello, err := h.Egg("hello", entrypoints.Origin{})
	if err != nil {
		t.Fatal(err)
	}
	// The plugin server binds the address it is given; ask the kernel for
	// a free port first and hand it over.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	srv, err := hello.Servers["http"](nil, entrypoints.NewLocal("listen", addr))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv(ctx, app) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("plugin server: %v", err)
		}
	})
	return addr
}

// vm returns a /proc/PID/status field (VmRSS, VmHWM) in bytes.
func vm(t *testing.T, pid, field string) int64 {
	t.Helper()
	f, err := os.Open("/proc/" + pid + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no %s in /proc/%s/status", field, pid)
	return 0
}

// checkErr checks an error a test expects: none when mention is nil, else
// one that is is (unless is is nil) and mentions every string of mention.
func checkErr(t *testing.T, err, is error, mention []string) {
	t.Helper()
	if mention == nil {
		if err != nil {
			t.Fatal(err)
		}
		return
	}
	if err == nil {
		t.Fatal("no error")
	}
	if is != nil && !errors.Is(err, is) {
		t.Fatalf("error %q is not %v", err, is)
	}
	for _, m := range mention {
		if !strings.Contains(err.Error(), m) {
			t.Errorf("error %q does not mention %q", err, m)
		}
	}
}

// startHostHelper runs a host in a process of its own (hostHelper) and
// returns it, the PID of its ptest plugin and the URL of a probe instance.
func startHostHelper(t *testing.T) (*exec.Cmd, int, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "PASTER_TEST_HOST_HELPER="+bin("ptest"))
	pid, r := startForPID(t, cmd)
	url, err := r.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	return cmd, pid, strings.TrimSpace(url)
}

// startForPID starts cmd, killed and waited for at the end of the test,
// and reads the PID it prints as its first line of output; it returns the
// PID and the rest of the output.
func startForPID(t *testing.T, cmd *exec.Cmd) (int, *bufio.Reader) {
	t.Helper()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	r := bufio.NewReader(out)
	line, err := r.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatalf("%s said %q, not a PID", cmd.Path, line)
	}
	return pid, r
}
