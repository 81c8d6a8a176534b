// Command load is the benchmark's load generator: N keep-alive HTTP/1.1
// connections over real TCP, each sending GET requests back to back for a
// fixed duration, against several named targets in alternating rounds, so
// that machine noise hits every target alike. It prints every round, then
// each target's median requests per second and its ratio to the baseline
// (the first target): the median of the per-round ratios, which pairs
// measurements taken close in time.
//
//	load [-c 16] [-d 3s] [-rounds 5] [-warmup 1s] [-goal 0.95] NAME=URL NAME=URL ...
//
// Exit status: 0 when every target reached the goal ratio, 3 when one did
// not, 1 on errors (a failed request counts as an error and is reported).
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/paster-dev/paster/bench/rounds"
)

type target struct {
	name, addr, request string
	rps                 []float64
	errors, non2xx      int64
}

func main() {
	conns := flag.Int("c", 16, "concurrent keep-alive connections")
	dur := flag.Duration("d", 3*time.Second, "duration of one round per target")
	nRounds := flag.Int("rounds", 5, "rounds; each runs every target once, order alternating")
	warmup := flag.Duration("warmup", time.Second, "unmeasured load on each target before the rounds")
	goal := flag.Float64("goal", 0.95, "ratio to the baseline every gated target should reach")
	gated := flag.String("gated", "", "comma-separated targets held to -goal (default: all)")
	var compares []comparison
	flag.Func("compare", "extra ratio `A/B>=GOAL` between two targets, per round (repeatable)", func(v string) error {
		c, err := parseComparison(v)
		compares = append(compares, c)
		return err
	})
	flag.Parse()
	if flag.NArg() < 1 {
		fmt.Fprintln(os.Stderr, "usage: load [flags] NAME=URL [NAME=URL ...] (the first is the baseline)")
		os.Exit(2)
	}
	var targets []*target
	for _, arg := range flag.Args() {
		name, raw, ok := strings.Cut(arg, "=")
		u, err := url.Parse(raw)
		if !ok || err != nil || u.Host == "" {
			fmt.Fprintf(os.Stderr, "load: bad target %q (want NAME=http://HOST:PORT/PATH)\n", arg)
			os.Exit(2)
		}
		targets = append(targets, &target{
			name: name, addr: u.Host,
			request: fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: paster-bench\r\n\r\n", u.RequestURI(), u.Host),
		})
	}

	fmt.Printf("load: %d connections, %s per round, %d rounds, targets: ", *conns, *dur, *nRounds)
	for i, t := range targets {
		if i > 0 {
			fmt.Print(", ")
		}
		fmt.Printf("%s=%s", t.name, t.addr)
	}
	fmt.Println()
	for _, t := range targets {
		run(t, *conns, *warmup)
	}
	for r := 0; r < *nRounds; r++ {
		order := make([]*target, len(targets))
		copy(order, targets)
		if r%2 == 1 {
			for i, j := 0, len(order)-1; i < j; i, j = i+1, j-1 {
				order[i], order[j] = order[j], order[i]
			}
		}
		fmt.Printf("round %d:", r+1)
		for _, t := range order {
			rps := run(t, *conns, *dur)
			t.rps = append(t.rps, rps)
			fmt.Printf("  %s %.0f req/s", t.name, rps)
		}
		fmt.Println()
	}

	base := targets[0]
	fmt.Printf("\n%-14s %12s %10s %8s %8s\n", "target", "median req/s", "ratio", "errors", "non-2xx")
	status := 0
	for _, t := range targets {
		ratio := rounds.Ratio(t.rps, base.rps)
		mark := ""
		if t != base && !isGated(*gated, t.name) {
			mark = ""
		} else if t != base {
			mark = "  (goal ≥ " + fmt.Sprint(*goal) + ": ok)"
			if ratio < *goal {
				mark = "  (goal ≥ " + fmt.Sprint(*goal) + ": BELOW)"
				status = max(status, 3)
			}
		} else {
			mark = "  (baseline)"
		}
		fmt.Printf("%-14s %12.0f %10.3f %8d %8d%s\n", t.name, rounds.Median(t.rps), ratio, t.errors, t.non2xx, mark)
		if t.errors > 0 || t.non2xx > 0 {
			status = 1
		}
	}
	byName := map[string]*target{}
	for _, t := range targets {
		byName[t.name] = t
	}
	for _, c := range compares {
		a, b := byName[c.a], byName[c.b]
		if a == nil || b == nil {
			fmt.Printf("%s/%s: not both measured\n", c.a, c.b)
			continue
		}
		ratio, verdict := rounds.Ratio(a.rps, b.rps), "ok"
		if ratio < c.goal {
			verdict = "BELOW"
			status = max(status, 3)
		}
		fmt.Printf("%s / %s = %.3f  (goal ≥ %v: %s)\n", c.a, c.b, ratio, c.goal, verdict)
	}
	os.Exit(status)
}

// comparison is a -compare flag: the per-round ratio of target a to target
// b, and the least it should be.
type comparison struct {
	a, b string
	goal float64
}

func parseComparison(v string) (comparison, error) {
	pair, goal, ok := strings.Cut(v, ">=")
	a, b, ok2 := strings.Cut(pair, "/")
	if !ok || !ok2 || a == "" || b == "" {
		return comparison{}, fmt.Errorf("want A/B>=GOAL, got %q", v)
	}
	g, err := strconv.ParseFloat(goal, 64)
	if err != nil {
		return comparison{}, fmt.Errorf("goal in %q: %w", v, err)
	}
	return comparison{a: a, b: b, goal: g}, nil
}

// isGated reports whether name is held to the -goal ratio.
func isGated(gated, name string) bool {
	if gated == "" {
		return true
	}
	for _, g := range strings.Split(gated, ",") {
		if strings.TrimSpace(g) == name {
			return true
		}
	}
	return false
}

// run loads t with n connections for d and returns the successful requests
// per second.
func run(t *target, n int, d time.Duration) float64 {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var ok, bad, failed atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				// A connection that failed is replaced; the failure counts.
				if err := conn(ctx, t, &ok, &bad); err != nil && ctx.Err() == nil {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	t.errors += failed.Load()
	t.non2xx += bad.Load()
	return float64(ok.Load()) / elapsed.Seconds()
}

// conn sends requests on one keep-alive connection until ctx ends.
func conn(ctx context.Context, t *target, ok, bad *atomic.Int64) error {
	c, err := net.Dial("tcp", t.addr)
	if err != nil {
		return err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	br := bufio.NewReaderSize(c, 16<<10)
	req := []byte(t.request)
	for {
		if _, err := c.Write(req); err != nil {
			return err
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		if ctx.Err() != nil {
			return nil // the request finished after the round ended: not counted
		}
		if resp.StatusCode/100 == 2 {
			ok.Add(1)
		} else {
			bad.Add(1)
		}
		if resp.Close {
			return errors.New("server closed the connection")
		}
	}
}
