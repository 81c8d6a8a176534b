// Command paster-plugin-ptest is the plugin the plugins tests run: an app
// whose paths exercise streaming, cancellation, trailers, panics, stray
// output and crashes.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/paster-dev/paster/entrypoints"
	"github.com/paster-dev/paster/plugins"
	"github.com/paster-dev/paster/runner"
)

func main() {
	plugins.Serve(&entrypoints.Dist{
		Name:    "ptest",
		Version: "1.0",
		Apps: map[string]entrypoints.AppFactory{
			"probe": newProbe,
			"panicky": func(map[string]string, entrypoints.Local) (http.Handler, error) {
				panic("factory boom")
			},
			"file": newFileApp,
		},
		Runners: map[string]entrypoints.ServerRunner{"clockrunner": clockRunner},
		Coroutines: map[string]entrypoints.CoroutineFactory{
			// ready reports ready (to the host's scheduler, across the
			// boundary) and runs until its context ends.
			"ready": func(map[string]string, entrypoints.Local) (entrypoints.Coroutine, error) {
				return func(ctx context.Context) error {
					runner.Ready(ctx)
					hclog.L().Info("ready coroutine reported ready")
					<-ctx.Done()
					hclog.L().Info("ready coroutine stopped")
					return nil
				}, nil
			},
			"waiter": func(map[string]string, entrypoints.Local) (entrypoints.Coroutine, error) {
				return func(ctx context.Context) error {
					hclog.L().Info("waiter started")
					<-ctx.Done()
					hclog.L().Info("waiter stopped")
					return nil
				}, nil
			},
		},
	})
}

type probe struct {
	name      string
	mu        sync.Mutex
	release   map[string]chan struct{}
	cancelled map[string]bool
}

func newProbe(_ map[string]string, local entrypoints.Local) (http.Handler, error) {
	p := &probe{name: local.Get("name"), release: map[string]chan struct{}{}, cancelled: map[string]bool{}}
	mux := http.NewServeMux()
	mux.HandleFunc("/name", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintf(w, "%s", p.name) })
	mux.HandleFunc("/pid", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintf(w, "%d", os.Getpid()) })
	mux.HandleFunc("/stream", p.stream)
	mux.HandleFunc("/release", func(w http.ResponseWriter, r *http.Request) {
		close(p.gate(r.URL.Query().Get("id")))
	})
	mux.HandleFunc("/block", func(w http.ResponseWriter, r *http.Request) {
		id := r.URL.Query().Get("id")
		if r.URL.Query().Get("flush") != "" {
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write([]byte("started\n"))
			w.(http.Flusher).Flush()
		}
		close(p.gate("started-" + id))
		<-r.Context().Done()
		p.mu.Lock()
		p.cancelled[id] = true
		p.mu.Unlock()
		hclog.L().Info("handler cancelled", "id", id)
	})
	mux.HandleFunc("/started", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-p.gate("started-" + r.URL.Query().Get("id")):
			fmt.Fprint(w, "yes")
		case <-r.Context().Done():
		}
	})
	mux.HandleFunc("/cancelled", func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		defer p.mu.Unlock()
		fmt.Fprint(w, p.cancelled[r.URL.Query().Get("id")])
	})
	mux.HandleFunc("/count", func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprint(w, n)
	})
	mux.HandleFunc("/body", p.body)
	mux.HandleFunc("/goroutines", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, runtime.NumGoroutine()) })
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = io.Copy(w, r.Body)
	})
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		buf := make([]byte, 1<<20)
		for i := range buf {
			buf[i] = byte(i)
		}
		for n > 0 {
			k := min(n, len(buf))
			_, _ = w.Write(buf[:k])
			n -= k
		}
	})
	mux.HandleFunc("/headers", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Add("X-Dup", "one")
		w.Header().Add("X-Dup", "two")
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"header": r.Header, "host": r.Host, "uri": r.RequestURI, "method": r.Method,
			"remote": r.RemoteAddr, "proto": r.Proto, "query": r.URL.Query().Get("q"),
		})
	})
	// /logid logs the request ID the host's request_id filter set, as a
	// plugin app's own log line would carry it.
	mux.HandleFunc("/logid", func(w http.ResponseWriter, r *http.Request) {
		hclog.L().Info("handled request", "request_id", r.Header.Get("X-Request-ID"))
	})
	mux.HandleFunc("/trailer", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Checksum")
		_, _ = w.Write([]byte("body"))
		w.Header().Set("X-Checksum", "abc123")
		w.Header().Set(http.TrailerPrefix+"X-Late", "late")
	})
	mux.HandleFunc("/panic", func(w http.ResponseWriter, r *http.Request) { panic("boom") })
	mux.HandleFunc("/panic-late", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("partial"))
		w.(http.Flusher).Flush()
		panic("late boom")
	})
	mux.HandleFunc("/print", func(w http.ResponseWriter, r *http.Request) {
		fmt.Println("stray stdout line")
		fmt.Fprintln(os.Stderr, "stray stderr line")
		hclog.L().Warn("plugin warning", "key", "value")
		hclog.L().Debug("plugin debug")
		hclog.L().Named("sub").Info("typed values", "wait", 10*time.Second, "n", 12345678901, "ratio", 0.25, "ok", true,
			"err", errors.New("bad thing"), "list", []time.Duration{time.Millisecond, time.Minute})
	})
	// /flood?n=N writes N lines to each of stdout, stderr and the hclog
	// logger as fast as it can, then one line of 100 KiB to each.
	mux.HandleFunc("/flood", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		long := strings.Repeat("x", 100<<10)
		var wg sync.WaitGroup
		for _, write := range []func(string){
			func(s string) { fmt.Println(s) },
			func(s string) { fmt.Fprintln(os.Stderr, s) },
			func(s string) { hclog.L().Info(s) },
		} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range n {
					write("flood line " + strconv.Itoa(i))
				}
				write("long line " + long)
			}()
		}
		wg.Wait()
	})
	mux.HandleFunc("/wait", func(w http.ResponseWriter, r *http.Request) {
		timeout, _ := time.ParseDuration(r.URL.Query().Get("timeout"))
		v, err := runner.CoreFrom(r.Context()).WaitForSignal(r.Context(), r.URL.Query().Get("name"), timeout)
		switch {
		case errors.Is(err, runner.ErrTimeout):
			fmt.Fprint(w, "timeout")
		case err != nil:
			fmt.Fprint(w, "error: ", err)
		default:
			fmt.Fprintf(w, "value %s", v)
		}
	})
	mux.HandleFunc("/signal", func(w http.ResponseWriter, r *http.Request) {
		n, err := runner.CoreFrom(r.Context()).Signal(r.Context(), r.URL.Query().Get("name"), []byte(r.URL.Query().Get("value")))
		fmt.Fprint(w, n, err)
	})
	// /big-value publishes (op=publish) or signals (op=signal) a value of
	// size bytes on name, answering "ok" or "error too-large=BOOL: ERR".
	mux.HandleFunc("/big-value", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		size, _ := strconv.Atoi(q.Get("size"))
		value := bytes.Repeat([]byte("x"), size)
		core := runner.CoreFrom(r.Context())
		var err error
		if q.Get("op") == "signal" {
			_, err = core.Signal(r.Context(), q.Get("name"), value)
		} else {
			_, err = core.Publish(r.Context(), q.Get("name"), value)
		}
		if err != nil {
			fmt.Fprintf(w, "error too-large=%v: %v", errors.Is(err, runner.ErrTooLarge), err)
			return
		}
		fmt.Fprint(w, "ok")
	})
	mux.HandleFunc("/pubsub", func(w http.ResponseWriter, r *http.Request) {
		core := runner.CoreFrom(r.Context())
		topic := r.URL.Query().Get("topic")
		sub, err := core.Subscribe(r.Context(), topic, runner.FromNow)
		if err != nil {
			fmt.Fprint(w, "error: ", err)
			return
		}
		defer sub.Close()
		seq, err := core.Publish(r.Context(), topic, []byte("m1"))
		if err != nil {
			fmt.Fprint(w, "error: ", err)
			return
		}
		msgs, err := sub.Fetch(r.Context())
		if err != nil || len(msgs) != 1 {
			fmt.Fprint(w, "error: ", err, len(msgs))
			return
		}
		fmt.Fprintf(w, "%d %d %s", seq, msgs[0].Seq, msgs[0].Data)
	})
	mux.HandleFunc("/exit", func(w http.ResponseWriter, r *http.Request) { os.Exit(3) })
	// spawn starts a child in a session (and process group) of its own and
	// a grandchild that leaves its parent and session (double fork and
	// setsid), and answers their PIDs.
	mux.HandleFunc("/spawn", func(w http.ResponseWriter, r *http.Request) {
		child := exec.Command("sleep", "300")
		child.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := child.Start(); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		go func() { _ = child.Wait() }()
		out, err := exec.Command("sh", "-c", "setsid sleep 300 >/dev/null 2>&1 & echo $!").Output()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprintf(w, "%d %s", child.Process.Pid, strings.TrimSpace(string(out)))
	})
	// statuses runs n children that exit with status 7 and counts the
	// statuses cmd.Wait reported right.
	mux.HandleFunc("/statuses", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		right := 0
		for range n {
			err := exec.Command("sh", "-c", "exit 7").Run()
			var ee *exec.ExitError
			if errors.As(err, &ee) && ee.ExitCode() == 7 {
				right++
			} else {
				hclog.L().Error("wrong status", "error", err)
			}
		}
		fmt.Fprint(w, right)
	})
	return mux, nil
}

func (p *probe) gate(id string) chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.release[id]
	if c == nil {
		c = make(chan struct{})
		p.release[id] = c
	}
	return c
}

// stream writes a first chunk, flushes, waits for /release?id=ID, then
// writes the second.
func (p *probe) stream(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get("id")
	_, _ = w.Write([]byte("first\n"))
	w.(http.Flusher).Flush()
	select {
	case <-p.gate(id):
	case <-r.Context().Done():
		return
	}
	_, _ = w.Write([]byte("second\n"))
}

// clockRunner is a server runner built on runner.Runner that adds, in code,
// a "clock" coroutine failing on every tick.
func clockRunner(ctx context.Context, app http.Handler, _ map[string]string, local entrypoints.Local) error {
	r, err := runner.New(app, local)
	if err != nil {
		return err
	}
	if err := r.Sched.Add("clock", func(ctx context.Context) error {
		return errors.New("tick failed")
	}, runner.Policy{Backoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond}); err != nil {
		return err
	}
	return r.Run(ctx)
}

// body reads the request body the way an upload handler does and answers
// its size, 413 for a body over the server's limit, or 400 with the read
// error. With ?id=ID it opens gate started-ID at the first bytes, and when
// the client is gone (io.ErrUnexpectedEOF) it waits for the request's
// context to end and records /cancelled?id=ID.
func (p *probe) body(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get("id")
	buf := make([]byte, 4096)
	var n int64
	var err error
	for err == nil {
		var k int
		k, err = r.Body.Read(buf)
		if k > 0 && n == 0 && id != "" {
			close(p.gate("started-" + id))
		}
		n += int64(k)
	}
	var tooLarge *http.MaxBytesError
	switch {
	case err == io.EOF:
		fmt.Fprint(w, n)
	case errors.As(err, &tooLarge):
		http.Error(w, fmt.Sprintf("%v (limit %d)", err, tooLarge.Limit), http.StatusRequestEntityTooLarge)
	case errors.Is(err, io.ErrUnexpectedEOF):
		<-r.Context().Done()
		p.mu.Lock()
		p.cancelled[id] = true
		p.mu.Unlock()
	default:
		http.Error(w, err.Error(), http.StatusBadRequest)
	}
}

// fileApp holds the file its key path names open from its creation until
// it is closed (an io.Closer, as a translogger with its log file): it
// answers with the file's name.
type fileApp struct{ f *os.File }

func newFileApp(_ map[string]string, local entrypoints.Local) (http.Handler, error) {
	f, err := os.OpenFile(local.Get("path"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, err
	}
	return fileApp{f}, nil
}

func (a fileApp) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	_, _ = io.WriteString(w, a.f.Name())
}

func (a fileApp) Close() error { return a.f.Close() }
