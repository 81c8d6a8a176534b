//go:build !linux

package plugins

import (
	"os"
	"os/exec"
	"syscall"
)

// sysProcAttr: without Pdeathsig, the SDK's parent watch stops orphans.
func sysProcAttr() *syscall.SysProcAttr { return nil }

// killGroup does nothing without process groups set up at start.
func killGroup(int) {}

// binaryCommand runs the binary by path: without /proc/self/fd, a file
// renamed over path between the checksum check and the start is executed
// unchecked (the [plugins] directory checks make that a same-user attack).
func binaryCommand(_ *os.File, path string) *exec.Cmd { return exec.Command(path) }
