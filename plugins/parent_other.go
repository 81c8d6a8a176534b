//go:build !linux

package plugins

// exitOf returns nil: without pidfds the caller polls for the process.
func exitOf(int) <-chan struct{} { return nil }
