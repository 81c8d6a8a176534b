package plugins

// Wiring go-plugin's logging to the plugin's hclog logger: the log relay
// (logrelay.go) carries the output, these adapters name it.

import (
	"io"

	"github.com/hashicorp/go-hclog"
)

// fixedName keeps go-plugin's logger named after the dist (go-plugin names
// its stderr logger after the binary's file name), and turns off go-plugin's
// relay of the plugin's stderr: the Stderr writer (a logRelay's) relays it
// instead, keeping the types of values and the rate limit. go-plugin asks
// for that logger as Named(file name of the command) and for its stdio
// client's as Named("stdio").
type fixedName struct{ hclog.Logger }

func (f fixedName) Named(name string) hclog.Logger {
	if name == "stdio" {
		return f
	}
	return hclog.New(&hclog.LoggerOptions{Level: hclog.Off, Output: io.Discard})
}

// execPathName shows the binary's path where go-plugin logs the path it
// executed, /proc/self/fd/3 on Linux (see binaryCommand).
type execPathName struct {
	hclog.Logger
	exec, path string
}

func (l execPathName) fix(args []any) []any {
	out := args
	for i, a := range args {
		if a == l.exec {
			if &out[0] == &args[0] {
				out = append([]any(nil), args...)
			}
			out[i] = l.path
		}
	}
	return out
}

func (l execPathName) Log(level hclog.Level, msg string, args ...any) {
	l.Logger.Log(level, msg, l.fix(args)...)
}
func (l execPathName) Trace(msg string, args ...any) { l.Logger.Trace(msg, l.fix(args)...) }
func (l execPathName) Debug(msg string, args ...any) { l.Logger.Debug(msg, l.fix(args)...) }
func (l execPathName) Info(msg string, args ...any)  { l.Logger.Info(msg, l.fix(args)...) }
func (l execPathName) Warn(msg string, args ...any)  { l.Logger.Warn(msg, l.fix(args)...) }
func (l execPathName) Error(msg string, args ...any) { l.Logger.Error(msg, l.fix(args)...) }

func levelName(l hclog.Logger) string {
	switch {
	case l.IsTrace():
		return "trace"
	case l.IsDebug():
		return "debug"
	case l.IsInfo():
		return "info"
	case l.IsWarn():
		return "warn"
	}
	return "error"
}
