package builtin

import (
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/paster-dev/paster/entrypoints"
	"github.com/paster-dev/paster/runner"
	"github.com/paster-dev/paster/runner/observe"
)

// healthKeys are the local keys egg:paster#health reads (Keys).
var healthKeys = []string{"allow"}

// healthFactory is egg:paster#health, liveness and readiness for load
// balancers and orchestrators. Relative to where it is mounted:
//
//	GET /live   200 "ok" while the process serves requests at all
//	GET /ready  200 "ready" when every required startup coroutine of the
//	            current generation is ready and every plugin process runs;
//	            503 with one reason per line otherwise
//	GET /       JSON: live, pid, ready, reasons, generation, draining
//	            generations, coroutines, plugins and the last reload
//
// The reasons and the JSON (PIDs, plugin paths, error messages) go only to
// clients in allow; any other client gets /ready and / as 200 "ready" /
// "ok" or 503 "not ready", without details. Keys:
//
//	allow   client networks given the details, CIDR or addresses
//	        separated by spaces or commas (default: loopback and unix only,
//	        127.0.0.0/8 ::1/128). The client is ClientAddr(r), as for
//	        pprof: behind a proxy, the address the prefix filter derived;
//	        a request relayed by a proxy (X-Forwarded-For, Forwarded or
//	        X-Real-IP) that no prefix filter read gets no details
//
// Readiness comes from the observe.Registry paster serve puts in each
// request's context; without one /ready answers 503. A bad network is an
// error naming the file, line, section and key.
//
//	[app:health]
//	use = egg:paster#health
func healthFactory(_ map[string]string, local entrypoints.Local) (http.Handler, error) {
	warnUnknown("health", local, healthKeys)
	allow, err := networks(local, "allow", localPeers)
	if err != nil {
		return nil, err
	}
	return &healthApp{allow: allow}, nil
}

type healthApp struct{ allow peers }

func (a *healthApp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !onlyGetHead(w, r, "method not allowed") {
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	reg := observe.From(r.Context())
	ready, reasons := false, []string{"no observe.Registry: not run under paster serve"}
	if reg != nil {
		ready, reasons = reg.Readiness()
	}
	p := strings.TrimSuffix(r.URL.Path, "/")
	if !clientAllowed(r, a.allow) && (p == "" || p == "/ready" || p == "/readyz") {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		switch {
		case !ready:
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte("not ready\n"))
		case p == "":
			w.Write([]byte("ok\n"))
		default:
			w.Write([]byte("ready\n"))
		}
		return
	}
	switch p {
	case "/live", "/livez", "/healthz":
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte("ok\n"))
	case "/ready", "/readyz":
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !ready {
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte(strings.Join(reasons, "\n") + "\n"))
			return
		}
		w.Write([]byte("ready\n"))
	case "":
		type plugin struct {
			Dist        string    `json:"dist"`
			Path        string    `json:"path"`
			PID         int       `json:"pid"`
			State       string    `json:"state"`
			NextRestart time.Time `json:"next_restart,omitzero"`
			Restarts    int       `json:"restarts"`
			Instances   int       `json:"instances"`
			LogDropped  uint64    `json:"log_lines_dropped"`
			Generations []int     `json:"generations"`
		}
		out := struct {
			Live       bool        `json:"live"`
			PID        int         `json:"pid"`
			Ready      bool        `json:"ready"`
			Reasons    []string    `json:"reasons,omitempty"`
			Generation int         `json:"generation"`
			Draining   []int       `json:"draining,omitempty"`
			Coroutines []coroutine `json:"coroutines"`
			// ServerCoroutines: those the server runner added in code.
			ServerCoroutines []coroutine `json:"server_coroutines"`
			Plugins          []plugin    `json:"plugins"`
			Reloads          struct {
				Total     int    `json:"total"`
				Failed    int    `json:"failed"`
				Last      any    `json:"last"` // a time, or "none yet"
				LastOK    *bool  `json:"last_ok,omitempty"`
				LastError string `json:"last_error,omitempty"`
			} `json:"reloads"`
		}{Live: true, PID: os.Getpid(), Ready: ready, Reasons: reasons, Coroutines: []coroutine{}, ServerCoroutines: []coroutine{}, Plugins: []plugin{}}
		out.Reloads.Last = "none yet"
		if reg != nil {
			s := reg.Snapshot()
			out.Generation, out.Draining = s.Generation, s.Draining
			out.Coroutines = append(out.Coroutines, coroutines(s.Coroutines)...)
			out.ServerCoroutines = append(out.ServerCoroutines, coroutines(s.ServerCoroutines)...)
			for _, p := range s.Plugins {
				out.Plugins = append(out.Plugins, plugin{Dist: p.Dist, Path: p.Path, PID: p.PID, State: p.State, NextRestart: p.NextRestart, Restarts: p.Restarts, Instances: p.Instances, LogDropped: p.LogDropped, Generations: p.Generations})
			}
			out.Reloads.Total, out.Reloads.Failed = s.Reloads.Total, s.Reloads.Failed
			if !s.Reloads.Last.IsZero() {
				ok := s.Reloads.LastOK
				out.Reloads.Last, out.Reloads.LastOK, out.Reloads.LastError = s.Reloads.Last, &ok, s.Reloads.LastError
			}
		}
		w.Header().Set("Content-Type", "application/json")
		if !ready {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(out)
	default:
		http.NotFound(w, r)
	}
}

// coroutine is one coroutine in /health's JSON.
type coroutine struct {
	Name      string    `json:"name"`
	State     string    `json:"state"`
	Required  bool      `json:"required"`
	Restarts  int       `json:"restarts"`
	LastError string    `json:"last_error,omitempty"`
	Since     time.Time `json:"since"`
}

func coroutines(cs []runner.CoroutineStatus) []coroutine {
	out := make([]coroutine, 0, len(cs))
	for _, c := range cs {
		co := coroutine{Name: c.Name, State: c.State.String(), Required: c.Required, Restarts: c.Restarts, Since: c.Since}
		if c.LastError != nil {
			co.LastError = c.LastError.Error()
		}
		out = append(out, co)
	}
	return out
}
