//go:build !unix

package runner

// openFileLimit returns a conventional open-file limit where the system has
// no RLIMIT_NOFILE.
func openFileLimit() int { return 8192 }
