package plugins

import (
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/paster-dev/paster/entrypoints"
	"github.com/paster-dev/paster/internal/testsync"
)

// TestLogTypes: a plugin's log values print as they would in-process (a
// duration as 10s, a large int in full, not as JSON's float64), under the
// plugin's logger name, with one timestamp: the host's.
func TestLogTypes(t *testing.T) {
	t.Parallel()
	h := newHost(t, HostOptions{})
	_, srv := probe(t, h, "types")
	mustGet(t, srv.URL+"/print", "")
	var line string
	testsync.WaitFor(t, "the typed log line", func() bool {
		for _, l := range strings.Split(h.logs.String(), "\n") {
			if strings.Contains(l, "typed values") {
				line = l
				return true
			}
		}
		return false
	})
	for _, want := range []string{"[INFO]  ptest.sub: typed values:", "wait=10s", "n=12345678901", "ratio=0.25", "ok=true", `err="bad thing"`, "list=[1ms, 1m0s]"} {
		if !strings.Contains(line, want) {
			t.Errorf("log line lacks %q:\n%s", want, line)
		}
	}
	if strings.Contains(line, "timestamp=") || len(regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:`).FindAllString(line, -1)) != 1 {
		t.Errorf("log line is stamped twice:\n%s", line)
	}
}

// TestLogFlood: a plugin writing as fast as it can to stdout, stderr and its
// logger gets at most log_rate lines a second into the host's log, the rest
// is counted and reported, and the host's other apps keep serving.
func TestLogFlood(t *testing.T) {
	t.Parallel()
	const rate, lines = 200, 20000
	h := newHost(t, HostOptions{})
	start := time.Now()
	_, srv := probeFrom(t, h, entrypoints.Origin{Plugins: map[string]string{"log_rate": "200"}}, "flood")
	hello, err := h.Egg("hello", entrypoints.Origin{})
	if err != nil {
		t.Fatal(err)
	}
	other, err := hello.Apps["main"](nil, entrypoints.Local{})
	if err != nil {
		t.Fatal(err)
	}
	otherSrv := serve(t, other)

	flooded := make(chan struct{})
	go func() {
		defer close(flooded)
		if code, body := get(t, srv.URL+"/flood?n="+strconv.Itoa(lines)); code != http.StatusOK {
			t.Errorf("flood: %d %s", code, body)
		}
	}()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-flooded:
				return
			default:
			}
			mustGet(t, otherSrv.URL, "Hello, world!\n")
		}
	}()
	<-flooded
	wg.Wait()

	relayed := func() int {
		s := h.logs.String()
		return strings.Count(s, "flood line ") + strings.Count(s, "long line ")
	}
	dropped := func() uint64 {
		for _, p := range h.Plugins() {
			if p.Dist == "ptest" {
				return p.LogDropped
			}
		}
		t.Fatal("no ptest plugin")
		return 0
	}
	const total = 3 * (lines + 1)
	testsync.WaitFor(t, "every line to be relayed or dropped", func() bool {
		return relayed()+int(dropped()) == total
	})
	elapsed := time.Since(start)
	n, d := relayed(), dropped()
	if max := rate + int(rate*elapsed.Seconds()) + 1; n > max {
		t.Errorf("%d lines relayed in %s, more than the limit allows (%d)", n, elapsed, max)
	}
	if d == 0 {
		t.Errorf("nothing dropped of %d lines", total)
	}
	testsync.WaitFor(t, "the dropped lines to be reported", func() bool {
		return strings.Contains(h.logs.String(), "plugin output over the log rate limit: lines dropped")
	})
}

// TestLogLongLines: a line is cut at MaxLogLine bytes, saying how much was
// dropped.
func TestLogLongLines(t *testing.T) {
	t.Parallel()
	h := newHost(t, HostOptions{LogRate: -1})
	_, srv := probe(t, h, "long")
	mustGet(t, srv.URL+"/flood?n=0", "")
	var long []string
	testsync.WaitFor(t, "three long lines", func() bool {
		long = long[:0]
		for _, l := range strings.Split(h.logs.String(), "\n") {
			if strings.Contains(l, "long line ") {
				long = append(long, l)
			}
		}
		return len(long) == 3
	})
	for _, l := range long {
		if len(l) > MaxLogLine+200 || !strings.Contains(l, "truncated_bytes=") {
			t.Errorf("long line of %d bytes not cut with a marker: %.200s…%s", len(l), l, l[max(0, len(l)-100):])
		}
	}
}
