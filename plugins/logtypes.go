package plugins

import (
	"fmt"
	"reflect"
	"strconv"

	"github.com/hashicorp/go-hclog"
)

// typedLogger is the plugin side of logging: it wraps the JSON logger a
// plugin writes to its stderr and turns each argument value that JSON would
// change into the text the host's logger would print for it in-process. A
// time.Duration is JSON's number of nanoseconds (the host printed 1e+10 for
// 10s): it goes as "10s"; so does every fmt.Stringer, hclog's Hex, Octal
// and Binary, and any struct or map (as %v). Strings, booleans, numbers and
// errors go as they are (the host reads numbers without rounding them).
type typedLogger struct{ hclog.Logger }

func (l typedLogger) Log(level hclog.Level, msg string, args ...any) {
	l.Logger.Log(level, msg, typedArgs(args)...)
}
func (l typedLogger) Trace(msg string, args ...any) { l.Logger.Trace(msg, typedArgs(args)...) }
func (l typedLogger) Debug(msg string, args ...any) { l.Logger.Debug(msg, typedArgs(args)...) }
func (l typedLogger) Info(msg string, args ...any)  { l.Logger.Info(msg, typedArgs(args)...) }
func (l typedLogger) Warn(msg string, args ...any)  { l.Logger.Warn(msg, typedArgs(args)...) }
func (l typedLogger) Error(msg string, args ...any) { l.Logger.Error(msg, typedArgs(args)...) }

func (l typedLogger) With(args ...any) hclog.Logger {
	return typedLogger{l.Logger.With(typedArgs(args)...)}
}
func (l typedLogger) Named(name string) hclog.Logger { return typedLogger{l.Logger.Named(name)} }
func (l typedLogger) ResetNamed(name string) hclog.Logger {
	return typedLogger{l.Logger.ResetNamed(name)}
}

// typedArgs returns args (key, value pairs) with each value as typedValue
// makes it; args itself is left alone.
func typedArgs(args []any) []any {
	out := args
	for i := 1; i < len(args); i += 2 {
		v := typedValue(args[i])
		if v == args[i] {
			continue
		}
		if &out[0] == &args[0] {
			out = append([]any(nil), args...)
		}
		out[i] = v
	}
	return out
}

// typedValue returns v as it should travel in a JSON log line to print on
// the host as it prints in-process.
func typedValue(v any) any {
	switch t := v.(type) {
	case nil, string, bool, error, hclog.Format, hclog.CapturedStacktrace:
		return v
	case hclog.Hex:
		return "0x" + strconv.FormatUint(uint64(t), 16)
	case hclog.Octal:
		return "0" + strconv.FormatUint(uint64(t), 8)
	case hclog.Binary:
		return "0b" + strconv.FormatUint(uint64(t), 2)
	case fmt.Stringer:
		return t.String()
	}
	rv := reflect.ValueOf(v)
	switch k := rv.Kind(); {
	case k >= reflect.Bool && k <= reflect.Float64, k == reflect.String:
		return v
	case k == reflect.Slice || k == reflect.Array:
		out := make([]any, rv.Len())
		for i := range out {
			out[i] = typedValue(rv.Index(i).Interface())
		}
		return out
	}
	return fmt.Sprintf("%v", v)
}
