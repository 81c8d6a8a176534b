package runner

import (
	"fmt"
	"strings"

	"github.com/paster-dev/paster/entrypoints"
)

// CoreKeys are the server-section keys CoreOptionsFromLocal reads.
var CoreKeys = []string{"sched_default_timeout", "pubsub_retain_count", "pubsub_retain_age"}

// UnknownKey returns an error naming the first key of local that is not in
// known — its file, line, section, the closest known key and the known
// ones — or nil when there is none. what names the section's kind in the
// error ("the memory core"). A core section's keys are all the core's, so
// its factories reject a misspelt one instead of ignoring it.
func UnknownKey(local entrypoints.Local, what string, known []string) error {
	for _, k := range local.Keys() {
		found := false
		for _, w := range known {
			found = found || k == w
		}
		if found {
			continue
		}
		msg := "unknown key of " + what
		if s := entrypoints.Suggest(k, known); s != "" {
			msg += fmt.Sprintf("; did you mean %q?", s)
		}
		return local.Errorf(k, "%s (known: %s)", msg, strings.Join(known, ", "))
	}
	return nil
}

// CoreOptionsFromLocal reads the Core's options from a server section, the
// one place these keys are read (New uses it for the LocalCore it makes;
// paster serve for the one Core of the process, shared with plugins):
//
//	sched_default_timeout  default timeout of waits that have none (seconds or
//	                       a Go duration; 0 or -1: none, the default)
//	pubsub_retain_count    messages a topic keeps (default 1000; 0: no limit)
//	pubsub_retain_age      how long a topic keeps a message (default 10m;
//	                       0: no limit); the two cannot both be 0
//
// A bad value is an error naming the file, line, section and key. Logger
// and Now are left zero.
func CoreOptionsFromLocal(local entrypoints.Local) (CoreOptions, error) {
	var opts CoreOptions
	var err error
	if opts.DefaultTimeout, err = local.Duration("sched_default_timeout", 0); err != nil {
		return CoreOptions{}, err
	}
	count, err := local.Int("pubsub_retain_count", DefaultRetainCount)
	if err != nil {
		return CoreOptions{}, err
	}
	age, err := local.Duration("pubsub_retain_age", DefaultRetainAge)
	if err != nil {
		return CoreOptions{}, err
	}
	if count <= 0 && age <= 0 {
		key := "pubsub_retain_count"
		if _, ok := local.Lookup(key); !ok {
			key = "pubsub_retain_age"
		}
		return CoreOptions{}, local.Errorf(key, "pubsub_retain_count and pubsub_retain_age cannot both be 0: topics would grow without limit")
	}
	opts.RetainCount, opts.RetainAge = count, age
	if count <= 0 {
		opts.RetainCount = -1
	}
	if age <= 0 {
		opts.RetainAge = -1
	}
	return opts, nil
}
