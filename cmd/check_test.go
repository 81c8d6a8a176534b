package pastercmd

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/paster-dev/paster/internal/testsync"
)

// TestCheckServerSettings: paster check reads and validates every setting
// of the server section the way serve would, through the runner itself
// (compiled in, or in a plugin process), without binding: what serve
// refuses makes check exit 1 with an error naming file, line, section and
// key; a valid section checks even while its port is taken.
func TestCheckServerSettings(t *testing.T) {
	t.Parallel()
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	heldPort := held.Addr().(*net.TCPAddr).Port

	const (
		builtin  = "egg:paster#http"
		hijacked = "egg:chat#hijacked_runner"
		hello    = "egg:hello#http-runner"
	)
	tests := []struct {
		name   string
		use    string
		key    string // written at line 3 of [server:main]
		exit   int
		stderr []string
	}{
		{"port not a number", builtin, "port = eighty", 1, []string{`a.ini:3 [server:main] port: bad integer value: "eighty"`}},
		{"port out of range", builtin, "port = 99999", 1, []string{"a.ini:3 [server:main] port: port 99999 out of range"}},
		{"shutdown_timeout not a duration", builtin, "shutdown_timeout = soon", 1, []string{`a.ini:3 [server:main] shutdown_timeout: bad duration: "soon"`}},
		{"ssl_pem missing", builtin, "ssl_pem = server.pem", 1, []string{"a.ini:3 [server:main] ssl_pem: open ", "server.pem: no such file"}},
		{"cert_file missing", builtin, "cert_file = server.pem\nkey_file = server.key", 1, []string{"a.ini:3 [server:main] cert_file: stat ", "server.pem: no such file"}},
		{"unknown TLS version", builtin, "ssl_pem = *\ntls_min_version = 1.4", 1, []string{`a.ini:4 [server:main] tls_min_version: unknown TLS version "1.4"`}},
		{"acme without domains", builtin, "acme = true", 1, []string{"a.ini:3 [server:main] acme: acme = true needs domains"}},
		{"self-signed TLS, redirect and h2c-free", builtin, "ssl_pem = *\nredirect_http = 127.0.0.1:0\ntls_min_version = 1.3", 0, nil},
		{"misspelt key", builtin, "prot = 9000", 1, []string{`a.ini:3 [server:main] prot: unknown server option; did you mean "port"?`}},
		{"runner key", builtin, "ready_timeout = later", 1, []string{`a.ini:3 [server:main] ready_timeout: bad duration`}},
		{"valid, port taken", builtin, fmt.Sprintf("port = %d", heldPort), 0, nil},
		{"memory core, bad retention", builtin, "core = c\n[core:c]\nuse = egg:paster#memory\npubsub_retain_count = lots", 1, []string{`a.ini:6 [core:c] pubsub_retain_count: bad integer value: "lots"`}},
		{"nats core without url", builtin, "core = c\n[core:c]\nuse = egg:paster#nats", 1, []string{"a.ini:", "[core:c]", "url is required"}},
		{"nats core, bad gather_timeout", builtin, "core = c\n[core:c]\nuse = egg:paster#nats\nurl = nats://127.0.0.1:1\ngather_timeout = soon", 1, []string{`a.ini:7 [core:c] gather_timeout: bad duration: "soon"`}},
		{"nats core, nats unreachable", builtin, fmt.Sprintf("core = c\n[core:c]\nuse = egg:paster#nats\nurl = nats://127.0.0.1:%d", heldPort), 1, []string{"a.ini:6 [core:c] url:", fmt.Sprintf("nats://127.0.0.1:%d", heldPort)}},
		{"unknown core section", builtin, "core = nope", 1, []string{`a.ini:3 [server:main] core`, "nope"}},
		{"memory core", builtin, "core = c\n[core:c]\nuse = egg:paster#memory", 0, nil},
		{"memory core, misspelt key", builtin, "core = c\n[core:c]\nuse = egg:paster#memory\npubsub_retain_cuont = 5", 1, []string{`a.ini:6 [core:c] pubsub_retain_cuont: unknown key of the memory core; did you mean "pubsub_retain_count"?`}},

		{"plugin runner's own key", hijacked, "tick_interval = soon", 1, []string{`a.ini:3 [server:main] tick_interval: bad duration: "soon"`}},
		{"plugin runner's own key out of range", hijacked, "tick_interval = -1", 1, []string{"a.ini:3 [server:main] tick_interval: must be positive"}},
		{"plugin runner, http key", hijacked, "port = eighty", 1, []string{`a.ini:3 [server:main] port: bad integer value: "eighty"`}},
		{"plugin runner, misspelt key", hijacked, "shutdwon_timeout = 5", 1, []string{`a.ini:3 [server:main] shutdwon_timeout: unknown server option; did you mean "shutdown_timeout"?`}},
		{"plugin runner, unknown TLS version", hijacked, "ssl_pem = *\ntls_min_version = tls9", 1, []string{`a.ini:4 [server:main] tls_min_version: unknown TLS version "tls9"`}},
		{"plugin runner valid, port taken", hijacked, fmt.Sprintf("port = %d", heldPort), 0, nil},

		{"plugin runner of its own, missing key", hello, "greeting = hi", 1, []string{"listen is required"}},
		{"plugin runner of its own valid, port taken", hello, fmt.Sprintf("listen = 127.0.0.1:%d", heldPort), 0, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			ini := fmt.Sprintf("[server:main]\nuse = %s\n%s\n\n[app:main]\nuse = egg:paster#static\ndocument_root = %%(here)s\n", tc.use, tc.key)
			if err := os.WriteFile(filepath.Join(dir, "a.ini"), []byte(ini), 0o644); err != nil {
				t.Fatal(err)
			}
			stdout, stderr, exit := paster(t, dir, "check", "a.ini")
			if exit != tc.exit {
				t.Fatalf("exit status %d, want %d\nstdout:\n%s\nstderr:\n%s", exit, tc.exit, stdout, stderr)
			}
			for _, want := range tc.stderr {
				if !strings.Contains(stderr, want) {
					t.Errorf("stderr lacks %q:\n%s", want, stderr)
				}
			}
			if tc.exit == 0 && !strings.HasSuffix(stdout, "ok\n") {
				t.Errorf("stdout does not end with ok:\n%s", stdout)
			}
		})
	}
}

// TestCheckEmbeddedCore: paster check on a NATS core with embedded = true
// validates every key of the core section as serve would, but starts no
// nats-server: it binds neither listen nor cluster_listen (both are taken
// by this test, so binding would fail) and creates no store_dir.
func TestCheckEmbeddedCore(t *testing.T) {
	t.Parallel()
	var ports []int
	for range 2 {
		held, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer held.Close()
		ports = append(ports, held.Addr().(*net.TCPAddr).Port)
	}
	core := fmt.Sprintf("core = c\n\n[core:c]\nuse = egg:paster#nats\nembedded = true\nstore_dir = %%(here)s/store\nlisten = 127.0.0.1:%d\ncluster_listen = 127.0.0.1:%d\n", ports[0], ports[1])
	tests := []struct {
		name   string
		extra  string // written at line 11, in [core:c]
		exit   int
		stderr string
	}{
		{"valid, listen and cluster_listen taken", "", 0, ""},
		{"bad replicas", "replicas = 9", 1, "a.ini:11 [core:c] replicas: replicas 9"},
		{"bad gather_timeout", "gather_timeout = soon", 1, `a.ini:11 [core:c] gather_timeout: bad duration: "soon"`},
		{"tls_cert without tls_key", "tls_cert = c.pem", 1, "a.ini:11 [core:c] tls_cert: tls_cert needs tls_key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			ini := "[server:main]\nuse = egg:paster#http\n" + core + tc.extra + "\n\n[app:main]\nuse = egg:paster#static\ndocument_root = %(here)s\n"
			if err := os.WriteFile(filepath.Join(dir, "a.ini"), []byte(ini), 0o644); err != nil {
				t.Fatal(err)
			}
			stdout, stderr, exit := paster(t, dir, "check", "a.ini")
			if exit != tc.exit || !strings.Contains(stderr, tc.stderr) {
				t.Fatalf("exit status %d, want %d with %q\nstdout:\n%s\nstderr:\n%s", exit, tc.exit, tc.stderr, stdout, stderr)
			}
			if _, err := os.Stat(filepath.Join(dir, "store")); !os.IsNotExist(err) {
				t.Errorf("check made the store_dir (stat: %v)", err)
			}
		})
	}
}

// TestServeCommandLinePort: "paster serve development.ini port=N", the
// README's example, serves on N. port=N is global conf and, by
// PasteDeploy's rule, hides [server:main]'s port = 8080 from its local
// conf; the server runners take the global's value and log it, through the
// chat plugin's hijacked_runner (a plugin process) and the built-in runner
// (--server-name plain). check prints the value the server uses.
func TestServeCommandLinePort(t *testing.T) {
	t.Parallel()
	dir := developmentDir(t, func(ini []byte) []byte { return ini })

	for _, tc := range []struct {
		name string
		args []string
	}{
		{"hijacked_runner in the chat plugin", nil},
		{"built-in http runner", []string{"--server-name", "plain"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			port := testsync.FreePort(t)
			portVar := fmt.Sprintf("port=%d", port)

			stdout, stderr, exit := paster(t, dir, append(append([]string{"check"}, tc.args...), "development.ini", portVar)...)
			if exit != 0 {
				t.Fatalf("check: exit %d\n%s\n%s", exit, stdout, stderr)
			}
			want := fmt.Sprintf(`port = %d  (the global value; the section's "8080" at development.ini:`, port)
			if !strings.Contains(stdout, want) {
				t.Errorf("check does not print the port the server uses (%q):\n%s", want, stdout)
			}

			p := startServe(t, dir, port, append(append([]string{}, tc.args...), "development.ini", portVar)...)
			if code, body := p.get("/hello/"); code != 200 || !strings.Contains(body, "Hello, paster!") {
				t.Errorf("GET /hello/ on port %d: %d %q", port, code, body)
			}
			p.waitFor("the runner's log line naming the global port", func() bool {
				log := p.log.String()
				return strings.Contains(log, "server setting taken from the global conf") && strings.Contains(log, fmt.Sprintf("value=%d", port))
			})
		})
	}
}
