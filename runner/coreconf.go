package runner

import (
	"github.com/paster-dev/paster/entrypoints"
)

// CoreKeys are the server-section keys CoreOptionsFromLocal reads.
var CoreKeys = []string{"sched_default_timeout", "pubsub_retain_count", "pubsub_retain_age"}

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
