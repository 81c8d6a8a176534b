// Command bulk is the benchmark of large transfers: it uploads SIZE bytes to
// POST URL/sink and downloads SIZE bytes from GET URL/source?bytes=SIZE of
// each target (bench/benchdist's routes), in alternating rounds, and prints
// each one's throughput, its ratio to the baseline (the first target) and
// how far the resident memory of each of the target's processes rose
// above where it stood before the transfer, sampled every 20 ms over the
// target's process and its descendants (a plugin host and its plugin).
//
//	bulk [-size 1073741824] [-rounds 3] [-goal 0.8] [-rss-goal 128] NAME=URL@PID ...
//
// Exit status: 0 when every target reached -goal of the baseline's
// throughput and no process grew by more than -rss-goal MiB (flat memory:
// a transfer must not be held in memory), 3 when one did not, 1 on errors.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/paster-dev/paster/bench/rounds"
)

type target struct {
	name, url string
	pid       int
	mbps      map[string][]float64 // direction → MB/s per round
	rssGrowth map[string]int64     // process label → largest rise in bytes
}

var directions = []string{"upload", "download"}

func main() {
	size := flag.Int64("size", 1<<30, "bytes per transfer")
	nRounds := flag.Int("rounds", 3, "rounds; each runs every target once, order alternating")
	goal := flag.Float64("goal", 0.8, "throughput ratio to the baseline every other target should reach")
	rssGoal := flag.Int64("rss-goal", 128, "largest rise of any process's RSS, in MiB, during a transfer")
	flag.Parse()
	if flag.NArg() < 1 {
		fmt.Fprintln(os.Stderr, "usage: bulk [flags] NAME=URL@PID [NAME=URL@PID ...] (the first is the baseline)")
		os.Exit(2)
	}
	var targets []*target
	for _, arg := range flag.Args() {
		t, err := parseTarget(arg)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bulk:", err)
			os.Exit(2)
		}
		targets = append(targets, t)
	}
	client := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	fmt.Printf("bulk: %d MiB per transfer, %d rounds\n", *size>>20, *nRounds)
	status := 0
	for r := 0; r < *nRounds; r++ {
		order := append([]*target(nil), targets...)
		if r%2 == 1 {
			for i, j := 0, len(order)-1; i < j; i, j = i+1, j-1 {
				order[i], order[j] = order[j], order[i]
			}
		}
		fmt.Printf("round %d:", r+1)
		for _, t := range order {
			for _, dir := range directions {
				mbps, err := transfer(client, t, dir, *size)
				if err != nil {
					fmt.Printf("\nbulk: %s %s: %v\n", t.name, dir, err)
					status = 1
					continue
				}
				t.mbps[dir] = append(t.mbps[dir], mbps)
				fmt.Printf("  %s %s %.0f MB/s", t.name, dir, mbps)
			}
		}
		fmt.Println()
	}
	if status != 0 {
		os.Exit(status)
	}

	base := targets[0]
	fmt.Printf("\n%-14s %-9s %12s %8s\n", "target", "direction", "median MB/s", "ratio")
	for _, t := range targets {
		for _, dir := range directions {
			ratio, mark := rounds.Ratio(t.mbps[dir], base.mbps[dir]), "  (baseline)"
			if t != base {
				mark = fmt.Sprintf("  (goal ≥ %v: ok)", *goal)
				if ratio < *goal {
					mark = fmt.Sprintf("  (goal ≥ %v: BELOW)", *goal)
					status = 3
				}
			}
			fmt.Printf("%-14s %-9s %12.0f %8.3f%s\n", t.name, dir, rounds.Median(t.mbps[dir]), ratio, mark)
		}
	}
	fmt.Printf("\nlargest RSS rise during a transfer (goal ≤ %d MiB):\n", *rssGoal)
	for _, t := range targets {
		labels := make([]string, 0, len(t.rssGrowth))
		for l := range t.rssGrowth {
			labels = append(labels, l)
		}
		sort.Strings(labels)
		for _, l := range labels {
			verdict := "ok"
			if t.rssGrowth[l] > *rssGoal<<20 {
				verdict, status = "ABOVE", 3
			}
			fmt.Printf("  %-14s %-28s %6.1f MiB  %s\n", t.name, l, float64(t.rssGrowth[l])/(1<<20), verdict)
		}
	}
	os.Exit(status)
}

func parseTarget(arg string) (*target, error) {
	name, rest, ok := strings.Cut(arg, "=")
	url, pidText, ok2 := strings.Cut(rest, "@")
	pid, err := strconv.Atoi(pidText)
	if !ok || !ok2 || err != nil || name == "" || !strings.HasPrefix(url, "http") {
		return nil, fmt.Errorf("bad target %q (want NAME=http://HOST:PORT@PID)", arg)
	}
	return &target{
		name: name, url: strings.TrimSuffix(url, "/"), pid: pid,
		mbps: map[string][]float64{}, rssGrowth: map[string]int64{},
	}, nil
}

// transfer runs one upload or download of size bytes against t while
// sampling the RSS of t's processes, and returns the throughput in MB/s.
func transfer(client *http.Client, t *target, dir string, size int64) (float64, error) {
	before := rssTree(t.pid)
	stop, peaks := sampleRSS(t.pid)
	start := time.Now()
	err := func() error {
		var resp *http.Response
		var err error
		if dir == "upload" {
			req, rerr := http.NewRequest(http.MethodPost, t.url+"/sink", &zeros{left: size})
			if rerr != nil {
				return rerr
			}
			req.ContentLength = size
			resp, err = client.Do(req)
		} else {
			resp, err = client.Get(t.url + "/source?bytes=" + strconv.FormatInt(size, 10))
		}
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		// io.Discard is an io.ReaderFrom that reads in 8 KiB pieces whatever
		// buffer it is given; hiding that makes the client read 64 KiB at a
		// time (as curl does), so its own CPU weighs less on both targets.
		n, err := io.CopyBuffer(struct{ io.Writer }{io.Discard}, resp.Body, make([]byte, 64<<10))
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %s", resp.Status)
		}
		if dir == "download" && n != size {
			return fmt.Errorf("got %d bytes, want %d", n, size)
		}
		return nil
	}()
	elapsed := time.Since(start)
	stop()
	for label, peak := range peaks() {
		// A process that did not grow is reported too, with 0.
		t.rssGrowth[label] = max(t.rssGrowth[label], peak-before[label], 0)
	}
	if err != nil {
		return 0, err
	}
	return float64(size) / 1e6 / elapsed.Seconds(), nil
}

// zeros is a body of left zero bytes that costs no memory to produce.
type zeros struct{ left int64 }

func (z *zeros) Read(p []byte) (int, error) {
	if z.left <= 0 {
		return 0, io.EOF
	}
	n := min(int64(len(p)), z.left)
	clear(p[:n])
	z.left -= n
	return int(n), nil
}

// sampleRSS samples the RSS of pid's process tree every 20 ms until stop is
// called; peaks returns the highest RSS seen per process label.
func sampleRSS(pid int) (stop func(), peaks func() map[string]int64) {
	done := make(chan struct{})
	var mu sync.Mutex
	peak := map[string]int64{}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			now := rssTree(pid)
			mu.Lock()
			for l, v := range now {
				peak[l] = max(peak[l], v)
			}
			mu.Unlock()
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()
	return func() { close(done); wg.Wait() }, func() map[string]int64 {
		mu.Lock()
		defer mu.Unlock()
		return peak
	}
}

// rssTree returns the RSS in bytes of pid and its descendants, labelled
// "NAME[PID]" (from /proc; Linux only, where the benchmarks run).
func rssTree(pid int) map[string]int64 {
	out := map[string]int64{}
	var walk func(int)
	walk = func(p int) {
		if rss, err := rssOf(p); err == nil {
			out[fmt.Sprintf("%s[%d]", processName(p), p)] = rss
		}
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", p))
		for _, f := range tasks {
			b, _ := os.ReadFile(f)
			for _, c := range strings.Fields(string(b)) {
				if child, err := strconv.Atoi(c); err == nil {
					walk(child)
				}
			}
		}
	}
	walk(pid)
	return out
}

// processName is the base name of pid's argv[0]: a plugin runs as
// /proc/self/fd/3 (its pinned binary), so its comm says only "3".
func processName(pid int) string {
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	argv0, _, _ := bytes.Cut(cmdline, []byte{0})
	return filepath.Base(string(argv0))
}

func rssOf(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmRSS")
}
