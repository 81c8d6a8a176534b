package wire

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/paster-dev/paster/entrypoints"
	"google.golang.org/grpc"
)

// Handshake values shared by the host and the SDK. ProtocolVersion changes
// when the wire changes incompatibly; go-plugin refuses a mismatch at start.
const (
	ProtocolVersion  = 1
	MagicCookieKey   = "PASTER_PLUGIN"
	MagicCookieValue = "7d1c0f6e-paster-dist-plugin"
	// PluginName is the single go-plugin PluginSet name both sides use.
	PluginName = "paster"
	// EnvLogLevel passes the host's log level to the plugin's hclog logger.
	EnvLogLevel = "PASTER_PLUGIN_LOG_LEVEL"
	// EnvExeFD names the descriptor of its own binary a plugin inherits
	// (the host executes that descriptor); the SDK closes it at start.
	EnvExeFD = "PASTER_PLUGIN_EXE_FD"
	// EnvDataFDs lists, comma-separated, the descriptors of the plugin's
	// ends of the data-plane connections (package transport's Mux).
	EnvDataFDs = "PASTER_PLUGIN_DATA_FDS"
	// EnvDataArenaFDs lists, comma-separated, the descriptors of the
	// data-plane connections' shared memory (package transport's
	// NewArena), in the order of EnvDataFDs; absent when the host made
	// none.
	EnvDataArenaFDs = "PASTER_PLUGIN_DATA_ARENA_FDS"
)

// Service and method names.
const (
	PluginService = "paster.v1.Plugin"
	HostService   = "paster.v1.Host"

	MethodHTTP     = "/paster.v1.Plugin/HTTP"
	MethodRun      = "/paster.v1.Plugin/Run"
	MethodDescribe = "/paster.v1.Plugin/Describe"
	MethodInit     = "/paster.v1.Plugin/Init"
	MethodCreate   = "/paster.v1.Plugin/Create"
	MethodDestroy  = "/paster.v1.Plugin/Destroy"
	MethodStatus   = "/paster.v1.Plugin/Status"

	HostMethodHTTP    = "/paster.v1.Host/HTTP"
	HostMethodLoadApp = "/paster.v1.Host/LoadApp"
)

// HTTPStream describes the bidi stream of one HTTP exchange (either service).
var HTTPStream = grpc.StreamDesc{StreamName: "HTTP", ServerStreams: true, ClientStreams: true}

// RunStream describes the Run stream: the host sends a RunRequest and later
// closes its side to ask the instance to stop; the plugin answers with one
// RunResult when the instance has returned, preceded by one with Ready set
// if the instance reported ready.
var RunStream = grpc.StreamDesc{StreamName: "Run", ServerStreams: true, ClientStreams: true}

// Manifest is what Describe returns: the dist and its entry point names.
type Manifest struct {
	Name    string                            `json:"name"`
	Version string                            `json:"version"`
	Entries map[entrypoints.Protocol][]string `json:"entries"`
	PID     int                               `json:"pid"`
	// DataPlane says the plugin serves requests and takes Core calls on
	// the data-plane sockets the host passed (EnvDataFDs); a plugin
	// without it is reached through gRPC streams.
	DataPlane bool `json:"data_plane,omitempty"`
}

// InitRequest hands the plugin the broker ID of the host's service.
type InitRequest struct {
	Broker uint32 `json:"broker"`
}

// ConfEntry is one key of a Local, with where it was written.
type ConfEntry struct {
	Key, Value, File, Section string
	Line                      int
}

// ShadowEntry is an entrypoints.Shadow: a key of the section, with where it
// was written, that the global value Global hides.
type ShadowEntry struct {
	ConfEntry
	Global string
}

// CreateRequest makes instance ID in the plugin. Proto is the entry point's
// group, or ProtoApply to apply filter instance Filter to the next app.
type CreateRequest struct {
	ID     uint64               `json:"id"`
	Proto  entrypoints.Protocol `json:"proto"`
	Name   string               `json:"name,omitempty"`
	Global map[string]string    `json:"global,omitempty"`
	Local  []ConfEntry          `json:"local,omitempty"`
	// Shadows are the section's keys that a global hides
	// (entrypoints.Shadow); in a field of their own so that a plugin built
	// before it cannot take them for local keys.
	Shadows []ShadowEntry `json:"shadows,omitempty"`
	// Loader is the host reference of a composite's Loader.
	Loader uint64 `json:"loader,omitempty"`
	// Filter is the filter instance to apply (ProtoApply).
	Filter uint64 `json:"filter,omitempty"`
	// Next is the wrapped app for filter-apps and ProtoApply.
	Next AppRef `json:"next"`
}

// ProtoApply is the pseudo-group of CreateRequests that apply a filter.
const ProtoApply entrypoints.Protocol = "paster.apply"

// CreateResponse lists the startup coroutines of an app instance.
type CreateResponse struct {
	Startup []string `json:"startup,omitempty"`
}

// AppRef names an app: an instance of the same plugin (Local) or an app the
// host serves through its HTTP method (Host). Zero means none.
type AppRef struct {
	Local uint64 `json:"local,omitempty"`
	Host  uint64 `json:"host,omitempty"`
}

// DestroyRequest asks the plugin to drop instances IDs (those of a
// generation that paster serve has drained). Unknown IDs are ignored.
type DestroyRequest struct {
	IDs []uint64 `json:"ids"`
}

// RunRequest runs instance ID: a server, runner or coroutine, or the startup
// coroutine Startup of an app instance. App is the app a server serves.
// Check runs a server or runner with a context that asks it to check its
// settings and return without binding (runner.WithCheck), for paster check.
type RunRequest struct {
	ID      uint64 `json:"id"`
	Startup string `json:"startup,omitempty"`
	App     AppRef `json:"app"`
	Check   bool   `json:"check,omitempty"`
	// Listeners, when not 0, names the host's listeners lent to this Run
	// (see LendMsg): a server asks the host for its sockets with it.
	Listeners uint64 `json:"listeners,omitempty"`
}

// RunResult ends a Run: Error is "" after a clean return. Before it, the
// plugin may send results with Ready set, one when the instance called
// runner.Ready; they do not end the Run.
type RunResult struct {
	Error string `json:"error,omitempty"`
	Ready bool   `json:"ready,omitempty"`
}

// StatusRequest asks for the coroutines of the scheduler(s) that server or
// runner instance ID runs while it runs (a runner.Runner's r.Sched).
type StatusRequest struct {
	ID uint64 `json:"id"`
}

// StatusResponse lists them; empty when the instance does not run.
// Instances is how many instances the plugin process holds (created and
// not destroyed), whatever ID was asked for; Goroutines and StackBytes are
// the process's goroutines and the memory their stacks hold (runtime/
// metrics /memory/classes/heap/stacks:bytes), which is most of what a
// request parked in the plugin costs it (0 from plugins that predate
// them).
type StatusResponse struct {
	Coroutines []CoroutineStatus `json:"coroutines,omitempty"`
	Instances  int               `json:"instances"`
	Goroutines int               `json:"goroutines,omitempty"`
	StackBytes uint64            `json:"stack_bytes,omitempty"`
}

// CoroutineStatus is a runner.CoroutineStatus: State is its String().
type CoroutineStatus struct {
	Name      string    `json:"name"`
	State     string    `json:"state"`
	Required  bool      `json:"required,omitempty"`
	Restarts  int       `json:"restarts,omitempty"`
	LastError string    `json:"last_error,omitempty"`
	Since     time.Time `json:"since"`
}

// LoadAppRequest asks the host's Loader Loader for an app.
type LoadAppRequest struct {
	Loader uint64            `json:"loader"`
	Name   string            `json:"name"`
	Global map[string]string `json:"global,omitempty"`
}

// FromLocal converts a Local to its wire form.
func FromLocal(l entrypoints.Local) []ConfEntry {
	out := make([]ConfEntry, 0, l.Len())
	for _, k := range l.Keys() {
		w := l.Where(k)
		out = append(out, ConfEntry{Key: k, Value: l.Get(k), File: w.File, Line: w.Line, Section: w.Section})
	}
	return out
}

// FromShadows converts the Shadows of a Local to their wire form.
func FromShadows(l entrypoints.Local) []ShadowEntry {
	var out []ShadowEntry
	for _, sh := range l.Shadows() {
		out = append(out, ShadowEntry{
			ConfEntry: ConfEntry{Key: sh.Key, Value: sh.Value, File: sh.At.File, Line: sh.At.Line, Section: sh.At.Section},
			Global:    sh.Global,
		})
	}
	return out
}

// ToLocal converts the wire form back to a Local, keeping order, locations
// and shadows.
func ToLocal(es []ConfEntry, shadows []ShadowEntry) entrypoints.Local {
	entries := make([]entrypoints.LocalEntry, len(es))
	for i, e := range es {
		entries[i] = entrypoints.LocalEntry{Key: e.Key, Value: e.Value, Where: entrypoints.Location{File: e.File, Line: e.Line, Section: e.Section}}
	}
	shs := make([]entrypoints.Shadow, len(shadows))
	for i, e := range shadows {
		shs[i] = entrypoints.Shadow{Key: e.Key, Value: e.Value, Global: e.Global,
			At: entrypoints.Location{File: e.File, Line: e.Line, Section: e.Section}}
	}
	return entrypoints.LocalOf(entries...).WithShadow(shs...)
}

// Invoke makes a unary JSON call on cc.
func Invoke(ctx context.Context, cc grpc.ClientConnInterface, method string, in, out any) error {
	data, err := json.Marshal(in)
	if err != nil {
		return err
	}
	var resp Blob
	if err := cc.Invoke(ctx, method, &Blob{Data: data}, &resp, CallCodec); err != nil {
		return err
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(resp.Data, out); err != nil {
		return fmt.Errorf("decoding %s reply: %w", method, err)
	}
	return nil
}

// Unary is a JSON method implementation.
type Unary func(ctx context.Context, in []byte) (any, error)

// UnaryMethod adapts f to a grpc.MethodDesc named name.
func UnaryMethod(name string, f Unary) grpc.MethodDesc {
	return grpc.MethodDesc{
		MethodName: name,
		Handler: func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			var in Blob
			if err := dec(&in); err != nil {
				return nil, err
			}
			out, err := f(ctx, in.Data)
			if err != nil {
				return nil, err
			}
			data, err := json.Marshal(out)
			if err != nil {
				return nil, err
			}
			return &Blob{Data: data}, nil
		},
	}
}
