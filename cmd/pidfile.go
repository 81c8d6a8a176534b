package pastercmd

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
)

// writePIDFile writes this process's id to path.
func writePIDFile(path string) error {
	return os.WriteFile(path, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644)
}

// removePIDFile removes path if it still holds this process's id, so a newer
// server's file is never deleted.
func removePIDFile(path string) {
	if pid, err := readPIDFile(path); err == nil && pid == os.Getpid() {
		os.Remove(path)
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
