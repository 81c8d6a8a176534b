//go:build unix

package plugins

import (
	"syscall"
	"time"
)

// processUsage returns the CPU time the process has used, user and
// system, and how many times the kernel has preempted its threads
// (involuntary context switches).
func processUsage() (usage, bool) {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return usage{}, false
	}
	return usage{cpu: time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), preemptions: uint64(ru.Nivcsw)}, true
}
