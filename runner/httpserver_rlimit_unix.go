//go:build unix

package runner

import "syscall"

// openFileLimit returns the soft RLIMIT_NOFILE, or unlimitedFiles when it
// cannot be read or is larger (RLIM_INFINITY is).
func openFileLimit() int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur > unlimitedFiles {
		return unlimitedFiles
	}
	return int(rl.Cur)
}
