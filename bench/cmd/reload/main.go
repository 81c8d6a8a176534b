// Command reload is the reload benchmark of bench/run.sh reload: it runs
// paster serve on a composition with a plugin app, drives GET requests at it
// from -c workers (half on kept-alive connections, half on a new connection
// per request), and meanwhile changes what runs -n times, cycling through
// four kinds of change:
//
//	setting   an app's setting (the greeting) in the INI file
//	binary    the plugin binary replaced by a new build (new content)
//	coroutine a startup coroutine added to / removed from the server section
//	server    the server section (shutdown_timeout), same address
//
// Each change is applied with SIGHUP (-trigger hup) or found by --reload
// (-trigger watch), and the next one waits until /health reports the reload.
// It prints requests sent, non-2xx answers and socket errors (both must be
// 0; the exit status is 1 otherwise), reloads ok and failed, latency
// percentiles and the longest pause: the longest time during which no
// request completed.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const ini = `[server:main]
use = egg:paster#http
host = 127.0.0.1
port = %d
shutdown_timeout = %d
%s

[coroutine:tick]
use = plugin:paster-plugin-hello#ticker
interval = 1

[composite:main]
use = egg:paster#urlmap
/hello = hello
/health = health
/metrics = metrics

[app:hello]
use = plugin:paster-plugin-hello#main
greeting = %s
name = bench

[app:health]
use = egg:paster#health

[app:metrics]
use = egg:paster#metrics
`

func main() {
	paster := flag.String("paster", "bin/paster", "paster binary")
	plugin := flag.String("plugin", "bin/plugins/paster-plugin-hello", "hello plugin binary")
	dir := flag.String("dir", "", "work directory (default: a temporary one)")
	n := flag.Int("n", 40, "reloads")
	conns := flag.Int("c", 8, "load workers")
	trigger := flag.String("trigger", "hup", "hup (SIGHUP) or watch (--reload)")
	kinds := flag.String("kinds", "setting,binary,coroutine,server", "kinds of change to cycle through")
	flag.Parse()
	if err := run(*paster, *plugin, *dir, *n, *conns, *trigger, strings.Split(*kinds, ",")); err != nil {
		fmt.Fprintln(os.Stderr, "reload:", err)
		os.Exit(1)
	}
}

type state struct {
	port, shutdown int
	greeting       string
	coroutine      bool
}

func (s state) write(dir string) error {
	startup := ""
	if s.coroutine {
		startup = "startup = tick"
	}
	body := fmt.Sprintf(ini, s.port, s.shutdown, startup, s.greeting)
	tmp := filepath.Join(dir, "reload.ini.tmp")
	if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, "reload.ini"))
}

func copyPlugin(src, dir string, gen int) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	// A different file that runs the same: what a rebuild looks like to
	// paster (new content, new mtime).
	b = append(b, fmt.Sprintf("build %d", gen)...)
	tmp := filepath.Join(dir, "paster-plugin-hello.tmp")
	if err := os.WriteFile(tmp, b, 0o755); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, "paster-plugin-hello"))
}

func run(paster, plugin, dir string, n, conns int, trigger string, kinds []string) error {
	if dir == "" {
		d, err := os.MkdirTemp("", "paster-reload-bench")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	st := state{port: port, shutdown: 5, greeting: "Hello"}
	if err := st.write(dir); err != nil {
		return err
	}
	if err := copyPlugin(plugin, dir, 0); err != nil {
		return err
	}
	args := []string{"serve", "reload.ini", "--log-file", "reload.log"}
	if trigger == "watch" {
		args = append(args, "--reload", "--reload-interval", "100ms")
	}
	cmd := exec.Command(paster, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}()
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	if _, err := waitHealth(base, func(h health) bool { return h.Generation >= 1 }); err != nil {
		return err
	}

	l := startLoad(base+"/hello", conns)
	time.Sleep(500 * time.Millisecond) // load before the first change (not a measurement)
	type change struct {
		kind       string
		start, end time.Time
	}
	var changes []change
	start := time.Now()
	for i := 1; i <= n; i++ {
		c := change{kind: kinds[(i-1)%len(kinds)], start: time.Now()}
		switch c.kind {
		case "setting":
			st.greeting = fmt.Sprintf("Hello%d", i)
		case "binary":
			if err := copyPlugin(plugin, dir, i); err != nil {
				return err
			}
		case "coroutine":
			st.coroutine = !st.coroutine
		case "server":
			st.shutdown = 5 + i%2
		}
		if err := st.write(dir); err != nil {
			return err
		}
		if trigger == "hup" {
			cmd.Process.Signal(syscall.SIGHUP)
		}
		if _, err := waitHealth(base, func(h health) bool { return h.Reloads.Total >= i }); err != nil {
			return err
		}
		c.end = time.Now()
		changes = append(changes, c)
	}
	took := time.Since(start)
	time.Sleep(300 * time.Millisecond) // load after the last change
	l.stop()
	h, _ := waitHealth(base, func(health) bool { return true })

	lat := l.latencies()
	fmt.Printf("reload benchmark: %d reloads (%s) by %s in %s, %d workers\n", n, strings.Join(kinds, ", "), trigger, took.Round(time.Millisecond), conns)
	fmt.Printf("  reloads:        %d ok, %d failed\n", h.Reloads.Total-h.Reloads.Failed, h.Reloads.Failed)
	fmt.Printf("  requests sent:  %d (%.0f/s)\n", l.sent.Load(), float64(l.sent.Load())/l.elapsed().Seconds())
	fmt.Printf("  non-2xx:        %d\n", l.non2xx.Load())
	fmt.Printf("  socket errors:  %d\n", l.errs.Load())
	fmt.Printf("  latency:        p50 %s  p99 %s  max %s\n", pct(lat, 0.50), pct(lat, 0.99), pct(lat, 1))
	pause, at := l.longestPause()
	// Attribute the pause to the last change begun before it (its old
	// generation drains after the reload is seen, so the pause may come
	// later than the reload).
	during := "no change"
	begin := at.Add(-pause)
	for _, c := range changes {
		if c.start.Before(begin) {
			during = fmt.Sprintf("after a %s change: from +%s to +%s; reload seen at +%s", c.kind,
				begin.Sub(c.start).Round(time.Millisecond), at.Sub(c.start).Round(time.Millisecond), c.end.Sub(c.start).Round(time.Millisecond))
		}
	}
	if len(changes) == 0 || begin.Before(changes[0].start) {
		during = "no change"
	}
	fmt.Printf("  longest pause:  %s (longest time no request completed; %s)\n", pause.Round(time.Microsecond), during)
	if l.first != "" {
		fmt.Printf("  first failure:  %s\n", l.first)
	}
	if l.non2xx.Load() != 0 || l.errs.Load() != 0 || h.Reloads.Failed != 0 {
		return fmt.Errorf("requests or reloads failed")
	}
	return nil
}

type health struct {
	Generation int `json:"generation"`
	Reloads    struct {
		Total  int `json:"total"`
		Failed int `json:"failed"`
	} `json:"reloads"`
}

func waitHealth(base string, cond func(health) bool) (health, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	deadline := time.Now().Add(60 * time.Second)
	for {
		var h health
		resp, err := c.Get(base + "/health/")
		if err == nil {
			err = json.NewDecoder(resp.Body).Decode(&h)
			resp.Body.Close()
			if err == nil && cond(h) {
				return h, nil
			}
		}
		if time.Now().After(deadline) {
			return h, fmt.Errorf("gave up waiting on %s/health/ (last error: %v)", base, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type load struct {
	sent, non2xx, errs atomic.Int64
	quit               chan struct{}
	wg                 sync.WaitGroup
	begin, end         time.Time

	mu    sync.Mutex
	first string
	lat   []time.Duration
	done  []time.Time // completion times
}

func startLoad(url string, conns int) *load {
	l := &load{quit: make(chan struct{}), begin: time.Now()}
	for i := range conns {
		tr := &http.Transport{DisableKeepAlives: i%2 == 1, MaxIdleConnsPerHost: 1}
		c := &http.Client{Timeout: 30 * time.Second, Transport: tr}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			var lat []time.Duration
			var done []time.Time
			defer func() {
				l.mu.Lock()
				l.lat = append(l.lat, lat...)
				l.done = append(l.done, done...)
				l.mu.Unlock()
			}()
			for {
				select {
				case <-l.quit:
					return
				default:
				}
				t0 := time.Now()
				l.sent.Add(1)
				resp, err := c.Get(url)
				if err != nil {
					l.errs.Add(1)
					l.fail(err.Error())
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				t1 := time.Now()
				if resp.StatusCode/100 != 2 {
					l.non2xx.Add(1)
					l.fail(resp.Status)
					continue
				}
				lat = append(lat, t1.Sub(t0))
				done = append(done, t1)
			}
		}()
	}
	return l
}

func (l *load) fail(s string) {
	l.mu.Lock()
	if l.first == "" {
		l.first = s
	}
	l.mu.Unlock()
}

func (l *load) stop() {
	close(l.quit)
	l.wg.Wait()
	l.end = time.Now()
}

func (l *load) elapsed() time.Duration { return l.end.Sub(l.begin) }

func (l *load) latencies() []time.Duration {
	out := slices.Clone(l.lat)
	slices.Sort(out)
	return out
}

// longestPause returns the longest time between two request completions
// and when it ended.
func (l *load) longestPause() (time.Duration, time.Time) {
	ts := slices.Clone(l.done)
	slices.SortFunc(ts, func(a, b time.Time) int { return a.Compare(b) })
	var longest time.Duration
	var at time.Time
	for i := 1; i < len(ts); i++ {
		if d := ts[i].Sub(ts[i-1]); d > longest {
			longest, at = d, ts[i]
		}
	}
	return longest, at
}

func pct(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p * float64(len(sorted)-1))
	return sorted[i].Round(time.Microsecond)
}
