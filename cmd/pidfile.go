package pastercmd

import (
	"bytes"
	"fmt"
	"os"
	"strconv"

	"github.com/hashicorp/go-hclog"
)

// writePIDFile writes this process's id to path.
func writePIDFile(path string) error {
	return os.WriteFile(path, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644)
}

// removePIDFile removes path if it still holds this process's id, so a newer
// server's file is never deleted. A file that cannot be removed is logged:
// after --user, the file's directory must be writable by that user.
func removePIDFile(path string, logger hclog.Logger) {
	if pid, err := readPIDFile(path); err == nil && pid == os.Getpid() {
		if err := os.Remove(path); err != nil {
			logger.Warn("pid file not removed; put it in a directory the user paster runs as may write (--user), or remove it yourself", "file", path, "error", err)
		}
	}
}

// readPIDFile returns the process id stored in path.
func readPIDFile(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(string(bytes.TrimSpace(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("not a valid PID file in %s", path)
	}
	return pid, nil
}
