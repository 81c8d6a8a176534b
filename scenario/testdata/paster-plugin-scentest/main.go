// Command paster-plugin-scentest is the plugin of paster's scenario tests:
// dist scentest, with
//
//   - app wait: examples/waitapp's app, in a second process, to signal (or
//     wait) from another plugin than paster-plugin-waitapp;
//   - app pubsub: GET /publish?topic=T&data=D publishes and answers the
//     sequence number; GET /fetch?topic=T&from=oldest|now|N subscribes,
//     writes and flushes "subscribed", fetches once and writes one JSON
//     line {"seqs": [...], "data": [...]} or {"gap_want": W, "gap_first": F};
//   - coroutine panicky: panics on every run;
//   - coroutine gate: waits until the file named by its key file exists,
//     then reports ready and runs until its context ends;
//   - coroutine worker: reports ready, runs until its context ends and logs
//     that it saw the cancellation;
//   - coroutine flood: writes "flood N" lines to stderr as fast as it can,
//     a plugin trying to flood its host's log.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/paster-dev/paster/entrypoints"
	"github.com/paster-dev/paster/examples/waitapp"
	"github.com/paster-dev/paster/plugins"
	"github.com/paster-dev/paster/runner"
)

func main() {
	plugins.Serve(&entrypoints.Dist{
		Name:    "scentest",
		Version: "0.0.1",
		Apps: map[string]entrypoints.AppFactory{
			"wait":   waitapp.Dist.Apps["main"],
			"pubsub": newPubSub,
		},
		Coroutines: map[string]entrypoints.CoroutineFactory{
			"panicky": newPanicky,
			"gate":    newGate,
			"worker":  newWorker,
			"flood":   newFlood,
		},
	})
}

func newPubSub(map[string]string, entrypoints.Local) (http.Handler, error) {
	mux := http.NewServeMux()
	mux.HandleFunc("/publish", func(w http.ResponseWriter, r *http.Request) {
		seq, err := runner.CoreFrom(r.Context()).Publish(r.Context(), r.FormValue("topic"), []byte(r.FormValue("data")))
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, seq)
	})
	mux.HandleFunc("/fetch", func(w http.ResponseWriter, r *http.Request) {
		from, err := runner.ParsePosition(r.FormValue("from"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		ctx := r.Context()
		sub, err := runner.CoreFrom(ctx).Subscribe(ctx, r.FormValue("topic"), from)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		defer sub.Close()
		fmt.Fprintln(w, "subscribed")
		http.NewResponseController(w).Flush()
		msgs, err := sub.Fetch(ctx)
		reply := map[string]any{}
		var gap *runner.GapError
		switch {
		case errors.As(err, &gap):
			reply["gap_want"], reply["gap_first"] = gap.Want, gap.First
		case err != nil:
			reply["error"] = err.Error()
		default:
			seqs, data := []uint64{}, []string{}
			for _, m := range msgs {
				seqs = append(seqs, m.Seq)
				data = append(data, string(m.Data))
			}
			reply["seqs"], reply["data"] = seqs, data
		}
		json.NewEncoder(w).Encode(reply)
	})
	return mux, nil
}

func newPanicky(map[string]string, entrypoints.Local) (entrypoints.Coroutine, error) {
	run := 0
	return func(ctx context.Context) error {
		run++
		hclog.L().Info("panicky starting", "run", run)
		panic("panicky coroutine panics, run " + strconv.Itoa(run))
	}, nil
}

func newGate(_ map[string]string, local entrypoints.Local) (entrypoints.Coroutine, error) {
	file := local.Get("file")
	if file == "" {
		return nil, local.Errorf("file", "required")
	}
	return func(ctx context.Context) error {
		hclog.L().Info("gate waiting for file", "file", file)
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			if _, err := os.Stat(file); err == nil {
				break
			}
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
			}
		}
		hclog.L().Info("gate open", "file", file)
		runner.Ready(ctx)
		<-ctx.Done()
		return nil
	}, nil
}

func newWorker(map[string]string, entrypoints.Local) (entrypoints.Coroutine, error) {
	return func(ctx context.Context) error {
		runner.Ready(ctx)
		hclog.L().Info("worker running")
		<-ctx.Done()
		hclog.L().Info("worker saw its context cancelled; finishing", "cause", ctx.Err())
		return nil
	}, nil
}

func newFlood(map[string]string, entrypoints.Local) (entrypoints.Coroutine, error) {
	return func(ctx context.Context) error {
		runner.Ready(ctx)
		w := bufio.NewWriterSize(os.Stderr, 64<<10)
		for n := 0; ctx.Err() == nil; n++ {
			fmt.Fprintf(w, "flood %d %s\n", n, strings.Repeat("x", 100))
		}
		return w.Flush()
	}, nil
}
