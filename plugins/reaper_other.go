//go:build !linux

package plugins

import (
	"time"

	"github.com/hashicorp/go-hclog"
)

// becomeSubreaper: there are no child subreapers outside Linux; a plugin's
// children that leave its process group may outlive it.
func becomeSubreaper(hclog.Logger) bool { return false }

// killDescendants does nothing without a subreaper to find them.
func killDescendants(hclog.Logger, time.Duration) {}
