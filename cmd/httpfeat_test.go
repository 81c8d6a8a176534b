package pastercmd

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/paster-dev/paster/internal/testsync"
)

// TestRequestIDThroughPlugin: paster serve with egg:paster#request_id in
// front of a plugin app (issue 13.7): the plugin app gets the ID in its
// request header (the one the client sent, or the one made), its own log
// lines carry it into paster's log, the client gets it in the response,
// and the translogger's %L writes it.
func TestRequestIDThroughPlugin(t *testing.T) {
	t.Parallel()
	bin := buildPtest(t)
	dir := t.TempDir()
	port := testsync.FreePort(t)
	ini := fmt.Sprintf(`[server:main]
use = egg:paster#http
host = 127.0.0.1
port = %d

[composite:main]
use = egg:paster#urlmap
/p = logged
/health = health

[app:health]
use = egg:paster#health

[pipeline:logged]
pipeline = log rid p

[filter:log]
use = egg:paster#translogger
format = %%%%L %%%%>s %%%%U
output = access.log

[filter:rid]
use = egg:paster#request_id

[app:p]
use = plugin:%s#probe
name = rid
`, port, bin)
	if err := os.WriteFile(filepath.Join(dir, "dev.ini"), []byte(ini), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startServe(t, dir, port, "dev.ini")
	get := func(path, id string) (string, string) {
		req, err := http.NewRequest("GET", p.base+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if id != "" {
			req.Header.Set("X-Request-ID", id)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d %s", path, resp.StatusCode, b)
		}
		return resp.Header.Get("X-Request-ID"), string(b)
	}

	id, body := get("/p/headers", "client-chosen-1")
	var seen struct {
		Header http.Header `json:"header"`
	}
	if err := json.Unmarshal([]byte(body), &seen); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	if id != "client-chosen-1" || seen.Header.Get("X-Request-ID") != id {
		t.Errorf("response ID %q, the plugin app saw %q; want client-chosen-1 both", id, seen.Header.Get("X-Request-ID"))
	}

	made, _ := get("/p/logid", "")
	bad, _ := get("/p/logid", "bad id with spaces")
	if len(made) != 26 || len(bad) != 26 || made == bad {
		t.Fatalf("made IDs %q and %q, want two different ones of 26 characters", made, bad)
	}
	for _, id := range []string{made, bad} {
		p.waitFor("the plugin's log line with request_id="+id, func() bool {
			return strings.Contains(p.log.String(), "request_id="+id)
		})
	}
	var log []byte
	p.waitFor("three access log lines", func() bool {
		log, _ = os.ReadFile(filepath.Join(dir, "access.log"))
		return strings.Count(string(log), "\n") == 3
	})
	want := "client-chosen-1 200 /p/headers\n" + made + " 200 /p/logid\n" + bad + " 200 /p/logid\n"
	if string(log) != want {
		t.Errorf("access log:\n%s\nwant:\n%s", log, want)
	}
}

// TestCheckHTTPFeatureKeys: paster check loads the filters and the static
// app of issue 13.7 and fails with exit 1 on a bad key, naming the file,
// line, section and key; the same file with good values checks.
func TestCheckHTTPFeatureKeys(t *testing.T) {
	t.Parallel()
	const good = `[server:main]
use = egg:paster#http
port = 0

[pipeline:main]
pipeline = rid cors limit files

[filter:rid]
use = egg:paster#request_id
header = X-Request-ID

[filter:cors]
use = egg:paster#cors
origins = https://app.example.com
credentials = true
max_age = 10m

[filter:limit]
use = egg:paster#ratelimit
rate = 10/s
burst = 20
key = header:X-Api-Key
max_keys = 1000

[app:files]
use = egg:paster#static
document_root = .
precompressed = br gzip
`
	tests := []struct {
		name, from, to, want string
	}{
		{"good", "", "", ""},
		{"request_id header", "header = X-Request-ID", "header = X Request", "dev.ini:10 [filter:rid] header:"},
		{"cors origin with a path", "origins = https://app.example.com", "origins = https://app.example.com/", "dev.ini:14 [filter:cors] origins:"},
		{"cors * with credentials", "origins = https://app.example.com", "origins = *", "dev.ini:15 [filter:cors] credentials:"},
		{"cors max_age", "max_age = 10m", "max_age = soon", "dev.ini:16 [filter:cors] max_age:"},
		{"ratelimit rate", "rate = 10/s", "rate = 10", "dev.ini:20 [filter:limit] rate:"},
		{"ratelimit burst", "burst = 20", "burst = 0", "dev.ini:21 [filter:limit] burst:"},
		{"ratelimit key", "key = header:X-Api-Key", "key = cookie:x", "dev.ini:22 [filter:limit] key:"},
		{"ratelimit max_keys", "max_keys = 1000", "max_keys = lots", "dev.ini:23 [filter:limit] max_keys:"},
		{"static precompressed", "precompressed = br gzip", "precompressed = zstd", "dev.ini:28 [app:files] precompressed:"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			ini := strings.Replace(good, tc.from, tc.to, 1)
			if err := os.WriteFile(filepath.Join(dir, "dev.ini"), []byte(ini), 0o644); err != nil {
				t.Fatal(err)
			}
			stdout, stderr, exit := paster(t, dir, "check", "dev.ini")
			if tc.want == "" {
				if exit != 0 {
					t.Fatalf("exit %d:\n%s%s", exit, stdout, stderr)
				}
				return
			}
			if exit != 1 || !strings.Contains(stderr, tc.want) {
				t.Errorf("exit %d, want 1 with %q:\n%s%s", exit, tc.want, stdout, stderr)
			}
		})
	}
}
