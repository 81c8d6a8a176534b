//go:build !unix

package plugins

// processUsage is not available here: the plugin keeps its GOMAXPROCS.
func processUsage() (usage, bool) { return usage{}, false }
