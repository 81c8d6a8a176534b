package runner

import (
	"fmt"
	"math"
	"strings"

	"github.com/paster-dev/paster/entrypoints"
)

// CoreKeys are the server-section keys CoreOptionsFromLocal reads.
var CoreKeys = []string{"sched_default_timeout", "pubsub_retain_count", "pubsub_retain_age",
	"core_max_value", "pubsub_retain_bytes", "pubsub_retain_total_bytes"}

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
//	core_max_value         the largest value Publish, Signal and
//	                       SignalAtLeast accept (bytes, or 64k, 1m...;
//	                       default 1m; 0: no limit)
//	pubsub_retain_bytes    bytes a topic keeps (default 64m; 0: no limit)
//	pubsub_retain_total_bytes
//	                       bytes all topics of the memory Core keep
//	                       together (default 256m; 0: no limit)
//
// core_max_value cannot be over pubsub_retain_bytes or
// pubsub_retain_total_bytes: a message that large would be dropped as soon
// as it was published.
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
	if err := sizeOptions(local, &opts); err != nil {
		return CoreOptions{}, err
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

// sizeOptions reads core_max_value, pubsub_retain_bytes and
// pubsub_retain_total_bytes into opts (0 in the file: no limit, -1 in
// opts).
func sizeOptions(local entrypoints.Local, opts *CoreOptions) error {
	keys := [...]struct {
		key string
		def int64
		v   *int64
	}{
		{"core_max_value", DefaultMaxValue, new(int64)},
		{"pubsub_retain_bytes", DefaultRetainBytes, &opts.RetainBytes},
		{"pubsub_retain_total_bytes", DefaultRetainTotalBytes, &opts.RetainTotalBytes},
	}
	for _, k := range keys {
		n, err := local.Size(k.key, k.def)
		if err != nil {
			return err
		}
		if n > math.MaxInt32 && k.key == "core_max_value" {
			return local.Errorf(k.key, "%d bytes is over the largest value a Core can take, 2g", n)
		}
		*k.v = n
		if n == 0 {
			*k.v = -1
		}
	}
	max := *keys[0].v
	for _, k := range keys[1:] {
		if max > 0 && *k.v > 0 && max > *k.v {
			return local.Errorf("core_max_value", "core_max_value (%d bytes) is over %s (%d bytes): a message that large would be dropped as soon as it was published", max, k.key, *k.v)
		}
	}
	opts.MaxValue = int(max)
	return nil
}
