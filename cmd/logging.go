package pastercmd

import (
	"fmt"
	"io"
	"os"

	"github.com/hashicorp/go-hclog"
)

// logOptions are the logging flags shared by serve and check.
type logOptions struct {
	file, level, format string
}

// newLogger builds the root hclog logger from the options and makes it
// hclog's default, so that library code logging through hclog.Default()
// (the built-in dist, the runners) follows --log-file, --log-level and
// --log-format too. The returned closer closes the log file, if any.
func (o logOptions) newLogger(stderr io.Writer) (hclog.Logger, io.Closer, error) {
	level := hclog.LevelFromString(o.level)
	if level == hclog.NoLevel {
		return nil, nil, fmt.Errorf("--log-level %q: want trace, debug, info, warn or error", o.level)
	}
	if o.format != "text" && o.format != "json" {
		return nil, nil, fmt.Errorf("--log-format %q: want text or json", o.format)
	}
	out, closer := stderr, io.Closer(noFile{})
	if o.file != "" {
		f, err := openLogFile(o.file)
		if err != nil {
			return nil, nil, fmt.Errorf("unable to write to log file: %w", err)
		}
		out, closer = f, f
	}
	logger := hclog.New(&hclog.LoggerOptions{
		Name:       "paster",
		Level:      level,
		JSONFormat: o.format == "json",
		Output:     out,
	})
	hclog.SetDefault(logger)
	return logger, closer, nil
}

// openLogFile opens the log file path for appending, creating it (mode
// 0644). A symbolic link is refused (openNoFollow), /dev/stderr too: to
// log to standard error, give no --log-file.
func openLogFile(path string) (*os.File, error) {
	return openNoFollow(path, os.O_APPEND|os.O_WRONLY, "a log file through one (for standard error, give no --log-file)")
}

// noFile is the closer of a logger that writes to stderr: nothing to close.
type noFile struct{}

func (noFile) Close() error { return nil }
