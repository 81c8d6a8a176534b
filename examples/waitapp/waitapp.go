// Package waitapp is cogen's wait_app in Go: a request that pauses on a named
// signal which the runner's Core delivers, possibly from another process.
//
//	[app:wait]
//	use = egg:waitapp#main
//	signal = abc      # the signal name (default abc)
//	timeout = 5       # seconds to wait (default 5)
//
// GET / streams "I'm waiting for some signal<br>" at once, waits for the
// signal, then writes "Your time is up !" or "Someone signaled me with this
// message: MESSAGE" (HTML-escaped). GET or POST /signal?message=TEXT sends the
// signal and answers how many waiters it woke; with min=N it first waits
// until at least N requests wait (runner's SignalAtLeast, bounded by the
// request), so that a test or a benchmark wakes a known number at once.
package waitapp

import (
	"errors"
	"fmt"
	"html"
	"net/http"
	"strconv"
	"time"

	"github.com/paster-dev/paster/entrypoints"
	"github.com/paster-dev/paster/runner"
)

// Dist is the waitapp distribution: one app, main.
var Dist = &entrypoints.Dist{
	Name:    "waitapp",
	Version: "0.1.0",
	Apps:    map[string]entrypoints.AppFactory{"main": newApp},
}

func newApp(_ map[string]string, local entrypoints.Local) (http.Handler, error) {
	signal := local.Get("signal")
	if signal == "" {
		signal = "abc"
	}
	timeout, err := local.Duration("timeout", 5*time.Second)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/{$}", func(w http.ResponseWriter, r *http.Request) {
		wait(w, r, signal, timeout)
	})
	mux.HandleFunc("/signal", func(w http.ResponseWriter, r *http.Request) {
		send(w, r, signal)
	})
	return mux, nil
}

// wait is the seed's wait_app: the first line reaches the client before the
// wait starts, so a browser shows it at once.
func wait(w http.ResponseWriter, r *http.Request, signal string, timeout time.Duration) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	fmt.Fprint(w, "I'm waiting for some signal<br>\n")
	if err := http.NewResponseController(w).Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return
	}
	value, err := runner.CoreFrom(r.Context()).WaitForSignal(r.Context(), signal, timeout)
	switch {
	case errors.Is(err, runner.ErrTimeout):
		fmt.Fprint(w, "Your time is up !\n")
	case err != nil:
		// Shutdown (ErrClosed), a client that left, or no Core at all:
		// the request still gets a definite answer.
		fmt.Fprintf(w, "Waiting ended: %s\n", html.EscapeString(err.Error()))
	default:
		fmt.Fprintf(w, "Someone signaled me with this message: %s\n", html.EscapeString(string(value)))
	}
}

func send(w http.ResponseWriter, r *http.Request, signal string) {
	message := r.FormValue("message")
	least := 0
	if v := r.FormValue("min"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			http.Error(w, "min: want a number of waiters", http.StatusBadRequest)
			return
		}
		least = n
	}
	woken, err := runner.CoreFrom(r.Context()).SignalAtLeast(r.Context(), signal, []byte(message), least)
	if err != nil {
		http.Error(w, "signal failed: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "Signalled %d waiter(s)\n", woken)
}
