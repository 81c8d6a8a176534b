// Package plugins is the process boundary: it makes a plugin binary look, to
// the loader and the runner, exactly like a compiled-in dist.
//
// The SDK side is Serve: a plugin's main calls plugins.Serve(dist) with the
// same *entrypoints.Dist value that could be compiled in.
//
// The host side is Host, an entrypoints.DistResolver. Host.Egg finds a
// plugin binary for a dist name in the plugin path, Host.Binary takes a path.
// Either starts the binary once (hashicorp/go-plugin, gRPC only), asks it to
// describe its entry points, and returns a Dist whose factories create
// instances inside the plugin process: every section that names the dist is
// an instance with its own configuration, all in one process per binary.
// Requests cross the boundary streamed both ways (package
// plugins/internal/transport); the plugin calls back into the host (a
// filter's next app, a composite's loader, a server's app) over one brokered
// connection set up when the process starts.
//
// # Coroutines and the Core
//
// All coroutines of the INI file (startup = on the server section) and of
// the apps (entrypoints.StartupProvider, a plugin app's included) run on the
// host's scheduler, supervised there: a plugin coroutine is a long-lived
// call into its plugin, and what it reports with runner.Ready reaches the
// host's scheduler — also when the server itself lives in a plugin (a
// server or server runner entry point such as egg:chat#hijacked_runner):
// the generation's scheduler in package engine starts them, waits for the
// required ones (ready_timeout) and stops them (shutdown_timeout) whatever
// server serves. A plugin runner's own coroutines, added in code with
// r.Sched.Add, run on its scheduler in the plugin.
//
// Who owns an instance: a Host's own dists (Egg, Binary) create instances
// nobody releases before Close; a Pool's Scope records every instance its
// dists create and destroys exactly those when it closes (see Pool).
//
// Every plugin process is served one Core, the host's (SetCore), so that a
// request waiting in one plugin is woken by a signal from another plugin or
// from the host. A request forwarded into a plugin uses the Core of the
// host request instead, when that differs (runner.Runner gives each request
// a runner.CoreScope): when shutdown closes the scope, the plugin's parked
// waits end with ErrClosed at once, as in-process ones do.
//
// # Finding plugin binaries
//
// egg:NAME looks for an executable file called paster-plugin-NAME in these
// directories, first match wins:
//
//  1. HostOptions.PluginDirs (paster's --plugin-dir flags), in order;
//  2. the directories of the PASTER_PLUGIN_PATH environment variable
//     (separated by the OS path list separator, ":" on Unix);
//  3. the directories of the "path" key of the INI file's [plugins] section
//     (separated by whitespace or ":"), relative to the INI file's directory;
//  4. the "plugins" directory next to the running executable, then the
//     executable's own directory (so bin/paster finds bin/plugins/*).
//
// plugin:PATH#NAME names a binary directly, relative to the INI file.
//
// # Checksums
//
// [plugins] sha256.NAME = HEX pins the SHA-256 of the binary for dist NAME
// (egg:NAME), or of the binary whose file name is NAME (plugin: URIs). The
// pin is checked before every start, restarts included; a mismatch is an
// ErrChecksum error. On Linux the host opens the binary once, hashes the
// open file and executes that same open file (/proc/self/fd), so replacing
// the file between the check and the start cannot run an unpinned binary.
//
// Every start also refuses (ErrWritable) a binary that group or others may
// write, or one in a directory, or below one, that group or others may
// write (sticky directories such as /tmp excepted): whoever can write there
// can replace what runs. [plugins] allow_writable = true turns the check off.
//
// # Supervision
//
// A plugin process that exits unexpectedly is seen at once. Requests that
// were in flight get 502 Bad Gateway, new ones 503 Service Unavailable with
// Retry-After (the seconds until the next start attempt) while the host
// starts a new process with backoff and recreates every instance. After
// HostOptions.MaxRestarts crashes within a minute the plugin is in a crash
// loop: each further start is tried after a cooldown (HostOptions.
// CrashLoopCooldown, [plugins] crash_loop_cooldown, default 30 s; 0 gives
// up, and the dist's apps answer 503 until a reload loads it again). A plugin
// never outlives its host: it is started with Pdeathsig SIGTERM and the SDK
// exits when its parent process changes. Nor does what a plugin starts: on
// Linux the SDK makes the plugin a child subreaper and kills every process
// below it before it exits, setsid'd and double-forked ones included (see
// Serve); the host also kills a stopped plugin's process group.
//
// # Output
//
// What a plugin logs with hclog, and anything else it writes to stdout or
// stderr, is logged by the host named after the dist, with the host's
// timestamp and the values as they print in-process. A plugin cannot flood
// the host's log: each binary gets at most HostOptions.LogRate lines a
// second ([plugins] log_rate, default 1000; a line of n KiB counts 1+n; 0
// means no limit), lines beyond are dropped and counted (PluginInfo.
// LogDropped) with a warning at most once a second, and a line is cut at
// MaxLogLine (16 KiB) with truncated_bytes=N.
package plugins

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/paster-dev/paster/entrypoints"
	"github.com/paster-dev/paster/privilege"
	"github.com/paster-dev/paster/runner"
	"google.golang.org/grpc/status"
)

// BinaryPrefix is the file name prefix of plugin binaries found by dist name:
// egg:hello runs paster-plugin-hello.
const BinaryPrefix = "paster-plugin-"

// EnvPluginPath is the environment variable with extra plugin directories.
const EnvPluginPath = "PASTER_PLUGIN_PATH"

// Errors a plugin start can fail with; test them with errors.Is. Every error
// also names the binary and says what was expected.
var (
	// ErrNotPlugin: the file is not a paster plugin (not executable, exits
	// before the handshake, or prints something else).
	ErrNotPlugin = errors.New("not a paster plugin")
	// ErrChecksum: the binary's SHA-256 differs from its [plugins] pin.
	ErrChecksum = errors.New("plugin checksum mismatch")
	// ErrProtocol: the plugin speaks another version of the plugin protocol.
	ErrProtocol = errors.New("plugin protocol version mismatch")
	// ErrStartTimeout: the plugin did not complete the handshake in time.
	ErrStartTimeout = errors.New("plugin did not start in time")
	// ErrWrongDist: the binary found for egg:NAME serves another dist.
	ErrWrongDist = errors.New("plugin serves another dist")
	// ErrUnavailable: the plugin is restarting, failed or the host is closed.
	ErrUnavailable = errors.New("plugin unavailable")
	// ErrWritable: the binary, or a directory on its path, may be written
	// by group or others (see [plugins] allow_writable).
	ErrWritable = errors.New("plugin binary writable by others")
)

// HostOptions configures a Host. The zero value works.
type HostOptions struct {
	// Logger receives the host's messages and, named after each dist, the
	// plugins' logs. Default: hclog.Default().
	Logger hclog.Logger
	// PluginDirs are searched first for egg: binaries (--plugin-dir).
	PluginDirs []string
	// StartTimeout bounds the handshake and the describe/init calls of a
	// start. Default 15 s.
	StartTimeout time.Duration
	// RestartBackoff is the first delay before a crashed plugin is started
	// again; it doubles per crash up to 10 s. Default 100 ms.
	RestartBackoff time.Duration
	// MaxRestarts is how many crashes within a minute are restarted with
	// backoff; each crash beyond is restarted after CrashLoopCooldown.
	// Default 5; negative means never restart.
	MaxRestarts int
	// CrashLoopCooldown is the wait before each restart once a plugin
	// crashed more than MaxRestarts times within a minute; [plugins]
	// crash_loop_cooldown overrides it. Default 30 s; negative means no
	// restart past the limit (the plugin stays failed until it is loaded
	// again by a reload).
	CrashLoopCooldown time.Duration

	// LogRate bounds the lines of output each plugin binary gets into the
	// host's log, per second (a line of n KiB counts 1+n), in bursts of as
	// many; lines beyond are dropped and counted (PluginInfo.LogDropped).
	// [plugins] log_rate overrides it. Default DefaultLogRate; negative
	// means no limit. Lines are cut at MaxLogLine bytes either way.
	LogRate int

	// User, if set, is who plugin processes run as (paster serve
	// --user/--group; [plugins] user and group override it). A host
	// running as root starts them as that user; one running as that user
	// already (it dropped privileges) just starts them. Nil: they run as
	// the host does.
	User *privilege.User
}

// DefaultCrashLoopCooldown is HostOptions.CrashLoopCooldown's default.
const DefaultCrashLoopCooldown = 30 * time.Second

// Host starts, supervises and stops plugin processes, and resolves dists to
// them. It is safe for concurrent use. Close it to stop every plugin.
type Host struct {
	opts HostOptions
	log  hclog.Logger

	mu     sync.Mutex
	procs  map[string]*proc // by absolute binary path
	closed bool

	refs   refs
	core   atomic.Pointer[runner.Core]     // served to plugins (SetCore)
	scopes scopes                          // Cores of forwarded requests
	lends  numbered[runner.ListenerSource] // listeners lent to plugin servers, by Run

	// restartGate, when set (tests), holds restarts until it yields.
	restartGate chan struct{}
	// dataStall, when set (tests), is the data plane's Mux.SetStall.
	dataStall time.Duration
}

// NewHost returns a Host with opts; it starts nothing until a dist is asked for.
func NewHost(opts HostOptions) *Host {
	if opts.Logger == nil {
		opts.Logger = hclog.Default()
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = 15 * time.Second
	}
	if opts.RestartBackoff <= 0 {
		opts.RestartBackoff = 100 * time.Millisecond
	}
	if opts.MaxRestarts == 0 {
		opts.MaxRestarts = 5
	}
	if opts.CrashLoopCooldown == 0 {
		opts.CrashLoopCooldown = DefaultCrashLoopCooldown
	}
	if opts.LogRate == 0 {
		opts.LogRate = DefaultLogRate
	}
	return &Host{opts: opts, log: opts.Logger.Named("plugins"), procs: map[string]*proc{}}
}

// SearchPath returns the directories egg: binaries are looked for in, in
// order, for a reference written in from (see the package documentation).
func (h *Host) SearchPath(from entrypoints.Origin) []string {
	var dirs []string
	dirs = append(dirs, h.opts.PluginDirs...)
	dirs = append(dirs, filepath.SplitList(os.Getenv(EnvPluginPath))...)
	if p := from.Plugins["path"]; p != "" {
		base := filepath.Dir(from.File)
		for _, d := range strings.FieldsFunc(p, func(r rune) bool { return r == ':' || r == ' ' || r == '\t' || r == '\n' }) {
			if !filepath.IsAbs(d) && from.File != "" {
				d = filepath.Join(base, d)
			}
			dirs = append(dirs, d)
		}
	}
	if exe, err := os.Executable(); err == nil {
		dir := filepath.Dir(exe)
		dirs = append(dirs, filepath.Join(dir, "plugins"), dir)
	}
	// Each directory once, at its first place: --plugin-dir bin/plugins and
	// the executable's own bin/plugins are often the same.
	out := dirs[:0]
	seen := map[string]bool{}
	for _, d := range dirs {
		if d == "" {
			continue
		}
		if d = filepath.Clean(d); !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	return out
}

// Find returns the path of the plugin binary for dist name: the first
// executable file paster-plugin-NAME in the plugin path. Otherwise it
// returns an error wrapping entrypoints.ErrNoDist that lists the
// directories searched and names the files of that name that are not
// executable.
func (h *Host) Find(name string, from entrypoints.Origin) (string, error) {
	dirs := h.SearchPath(from)
	file := BinaryPrefix + name
	var notExec []string
	for _, d := range dirs {
		p := filepath.Join(d, file)
		st, err := os.Stat(p)
		switch {
		case err != nil || !st.Mode().IsRegular():
		case st.Mode()&0o111 != 0:
			return p, nil
		default:
			notExec = append(notExec, fmt.Sprintf("%s (mode %s; chmod +x it)", p, st.Mode()))
		}
	}
	msg := fmt.Sprintf("no plugin binary %s in the plugin path (%s)", file, strings.Join(dirs, ", "))
	if len(notExec) > 0 {
		msg += "; found but not executable: " + strings.Join(notExec, ", ")
	}
	return "", fmt.Errorf("%w: %s", entrypoints.ErrNoDist, msg)
}

// DistNames returns the sorted names of the dists whose executables
// (paster-plugin-NAME) are in the plugin path for a reference written in
// from, starting none: the loader suggests a near miss among them for an
// egg: name nothing has (entrypoints.DistLister).
func (h *Host) DistNames(from entrypoints.Origin) []string {
	var names []string
	for _, d := range h.SearchPath(from) {
		entries, err := os.ReadDir(d)
		if err != nil {
			continue
		}
		for _, e := range entries {
			name, ok := strings.CutPrefix(e.Name(), BinaryPrefix)
			if !ok || name == "" {
				continue
			}
			if st, err := os.Stat(filepath.Join(d, e.Name())); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
				names = append(names, name)
			}
		}
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// Egg returns the dist name served by the binary paster-plugin-NAME in the
// plugin path, starting it if it is not running. Errors: ErrNoDist when
// there is no binary; else those of Binary, or ErrWrongDist when the binary
// serves another dist.
func (h *Host) Egg(name string, from entrypoints.Origin) (*entrypoints.Dist, error) {
	path, err := h.Find(name, from)
	if err != nil {
		return nil, err
	}
	return h.egg(path, name, from, nil)
}

// egg is Egg for the binary at path, with instances owned by s.
func (h *Host) egg(path, name string, from entrypoints.Origin, s *Scope) (*entrypoints.Dist, error) {
	d, err := h.start(path, from.Plugins["sha256."+name], from, s)
	if err != nil {
		return nil, err
	}
	if d.Name != name {
		return nil, fmt.Errorf("%w: binary %s was found for dist %s but serves dist %s", ErrWrongDist, path, name, d.Name)
	}
	return d, nil
}

// Binary returns the dist served by the executable at path (relative to the
// INI file of from), starting it if it is not running. A [plugins]
// sha256.BASENAME key pins its checksum. Errors wrap ErrNotPlugin,
// ErrChecksum, ErrProtocol or ErrStartTimeout and name the binary.
func (h *Host) Binary(path string, from entrypoints.Origin) (*entrypoints.Dist, error) {
	return h.binary(path, from, nil)
}

// binary is Binary with instances owned by s.
func (h *Host) binary(path string, from entrypoints.Origin, s *Scope) (*entrypoints.Dist, error) {
	if !filepath.IsAbs(path) && from.File != "" {
		path = filepath.Join(filepath.Dir(from.File), path)
	}
	return h.start(path, from.Plugins["sha256."+filepath.Base(path)], from, s)
}

// procSettings are the [plugins] keys that tune a plugin's supervision.
type procSettings struct {
	cooldown time.Duration   // crash_loop_cooldown; 0: no restart past the limit
	logRate  int             // log_rate; 0 or less: no limit
	user     *privilege.User // user and group; nil: the host's user
}

// PluginsKeys are the keys of the [plugins] section, besides sha256.NAME
// (the pin of the binary paster-plugin-NAME); any other is an error.
var PluginsKeys = []string{"path", "allow_writable", "crash_loop_cooldown", "log_rate", "user", "group"}

// settings checks the [plugins] keys of from and reads
// crash_loop_cooldown, log_rate, user and group from the
// [plugins] section of from, defaulting to h's options. A bad value is an
// error naming the key: an unknown user or group, or one the host cannot
// start processes as (it is not root, and not that user).
func (h *Host) settings(from entrypoints.Origin) (procSettings, error) {
	s := procSettings{cooldown: max(h.opts.CrashLoopCooldown, 0), logRate: h.opts.LogRate, user: h.opts.User}
	for key := range from.Plugins {
		if !slices.Contains(PluginsKeys, key) && !strings.HasPrefix(key, "sha256.") {
			msg := "unknown key of [plugins]"
			if near := entrypoints.Suggest(key, PluginsKeys); near != "" {
				msg += fmt.Sprintf("; did you mean %q?", near)
			}
			return s, pluginsKeyError(from, key, msg)
		}
	}
	userName, userSet := from.Plugins["user"]
	groupName, groupSet := from.Plugins["group"]
	if userSet || groupSet {
		key := "user"
		if !userSet {
			key = "group"
		}
		u, err := privilege.Lookup(strings.TrimSpace(userName), strings.TrimSpace(groupName))
		if err == nil && u != nil {
			err = u.Apply(&syscall.SysProcAttr{})
		}
		if err != nil {
			if groupSet && userSet && strings.Contains(err.Error(), "group") {
				key = "group"
			}
			return s, pluginsKeyError(from, key, "plugin processes cannot run as it: "+err.Error())
		}
		s.user = u
	}
	if v, ok := from.Plugins["crash_loop_cooldown"]; ok {
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil || d < 0 {
			return s, pluginsKeyError(from, "crash_loop_cooldown", "want a duration such as 30s (0: no restart past the crash-loop limit)")
		}
		s.cooldown = d
	}
	if v, ok := from.Plugins["log_rate"]; ok {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < 0 {
			return s, pluginsKeyError(from, "log_rate", "want a number of lines per second such as 1000 (0: no limit)")
		}
		s.logRate = n
	}
	return s, nil
}

// pluginsKeyError is the error for a bad value of the [plugins] key in
// from: it names the file and line of the key, the key, its value and want.
func pluginsKeyError(from entrypoints.Origin, key, want string) error {
	at := from.PluginsAt[key]
	at.Section = "plugins"
	return fmt.Errorf("%s %s = %q: %s", at, key, from.Plugins[key], want)
}

// start starts the binary at path unless it runs, and returns its dist, whose
// instances s owns (nil: nobody).
func (h *Host) start(path, pin string, from entrypoints.Origin, s *Scope) (*entrypoints.Dist, error) {
	settings, err := h.settings(from)
	if err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	var sum []byte
	if pin != "" {
		sum, err = hex.DecodeString(strings.TrimSpace(pin))
		if err != nil || len(sum) != sha256.Size {
			return nil, fmt.Errorf("plugin binary %s: [plugins] sha256 pin %q is not 64 hex digits", abs, pin)
		}
	}
	allowWritable := false
	if v, ok := from.Plugins["allow_writable"]; ok {
		if allowWritable, err = entrypoints.AsBool(v); err != nil {
			return nil, fmt.Errorf("plugin binary %s: [plugins] allow_writable = %q: want true or false", abs, v)
		}
	}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, fmt.Errorf("plugin binary %s: %w: host is closed", abs, ErrUnavailable)
	}
	p := h.procs[abs]
	if p == nil {
		p = newProc(h, abs, sum, allowWritable)
		h.procs[abs] = p
	}
	h.mu.Unlock()
	p.configure(settings)
	if err := p.startOnce(); err != nil {
		return nil, err
	}
	if sum != nil {
		if err := p.pin(sum); err != nil {
			return nil, err
		}
	}
	return p.remoteDist(p.manifest, s), nil
}

// pin checks sum against the binary the running process was started from
// (it may have been started unpinned, for another reference) and makes
// later restarts check it.
func (p *proc) pin(sum []byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if string(p.ran) != string(sum) {
		return fmt.Errorf("%w: plugin binary %s was started with sha256 %x, [plugins] pins %x", ErrChecksum, p.path, p.ran, sum)
	}
	if p.sum == nil {
		p.sum = sum
	}
	return nil
}

// FileSum returns the SHA-256 of the file at path: the digest a
// [plugins] sha256.NAME pin is compared with.
func FileSum(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	hs := sha256.New()
	if _, err := io.Copy(hs, f); err != nil {
		return nil, err
	}
	return hs.Sum(nil), nil
}

// PluginInfo describes a running plugin process.
type PluginInfo struct {
	Path    string
	Dist    string
	Version string
	PID     int
	// State is StateRunning, StateRestarting (a restart with backoff is
	// due), StateCrashLoop (more than MaxRestarts crashes within a minute:
	// the restart is due after the cooldown), StateFailed (not restarted)
	// or StateClosed.
	State State
	// NextRestart is when the next start attempt is due while restarting
	// or in a crash loop (zero otherwise).
	NextRestart time.Time
	// Restarts counts the processes started after a crash.
	Restarts int
	// Instances counts the instances created in the process and not yet
	// destroyed (what a restart recreates).
	Instances int
	// LogDropped counts the lines of output dropped over the log rate
	// limit (HostOptions.LogRate), over every process of the binary.
	LogDropped uint64
	// Scopes are the ids of the live scopes holding the process
	// (Pool.Plugins; nil from Host.Plugins).
	Scopes []int
}

// Plugins returns the plugins started so far, sorted by path.
func (h *Host) Plugins() []PluginInfo {
	var out []PluginInfo
	for _, p := range h.procList() {
		out = append(out, p.info())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

// Close drains and stops every plugin: new requests get 503, requests in
// flight may finish until ctx ends, running servers and coroutines are asked
// to stop, then the processes are stopped (killed 2 s later if they linger).
// It returns ctx's error if draining was cut short. Dists from the Host must
// not be used to create instances afterwards.
func (h *Host) Close(ctx context.Context) error {
	h.mu.Lock()
	h.closed = true
	h.mu.Unlock()
	ps := h.procList()
	var wg sync.WaitGroup
	errs := make([]error, len(ps))
	for i, p := range ps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = p.close(ctx)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// procList returns the plugin binaries the Host started, in no order.
func (h *Host) procList() []*proc {
	h.mu.Lock()
	defer h.mu.Unlock()
	ps := make([]*proc, 0, len(h.procs))
	for _, p := range h.procs {
		ps = append(ps, p)
	}
	return ps
}

// refs holds what the host serves to plugins by number: apps (a filter's
// next, a server's app, apps a composite loaded) and composite loaders.
type refs struct {
	next    atomic.Uint64
	apps    sync.Map // uint64 -> http.Handler
	loaders sync.Map // uint64 -> entrypoints.Loader
}

func (r *refs) addApp(h http.Handler) uint64 {
	id := r.next.Add(1)
	r.apps.Store(id, h)
	return id
}

func (r *refs) addLoader(l entrypoints.Loader) uint64 {
	id := r.next.Add(1)
	r.loaders.Store(id, l)
	return id
}

func (r *refs) app(id uint64) http.Handler {
	v, ok := r.apps.Load(id)
	if !ok {
		return nil
	}
	return v.(http.Handler)
}

// rpcError turns a gRPC status error into a plain error with its message.
func rpcError(err error) error {
	if st, ok := status.FromError(err); ok {
		return errors.New(st.Message())
	}
	return err
}
