//go:build !unix

package plugins

import "time"

// processCPU is not available here: the plugin keeps its GOMAXPROCS.
func processCPU() (time.Duration, bool) { return 0, false }
