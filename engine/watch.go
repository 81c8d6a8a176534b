package engine

import (
	"context"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

// watcher polls files for --reload: every INI file the loader read
// (includes too) and every plugin binary a generation started. A change is
// a different size or modification time, or a file appearing or vanishing.
// Changes are debounced: the reload is asked for once a poll sees nothing
// further change, so an editor's save or a compiler writing a binary in
// several steps gives one reload.
type watcher struct {
	interval time.Duration
	log      hclog.Logger
	reload   chan struct{} // receives one value per settled change

	mu     sync.Mutex
	stamps map[string]fileStamp // baseline; zero stamp: missing
}

// fileStamp is what the watcher's cheap check of a file sees.
type fileStamp struct {
	size    int64
	modTime time.Time
}

func stampOf(path string) (fileStamp, error) {
	st, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{size: st.Size(), modTime: st.ModTime()}, nil
}

func newWatcher(interval time.Duration, log hclog.Logger) *watcher {
	return &watcher{interval: interval, log: log.Named("reload"), reload: make(chan struct{}, 1), stamps: map[string]fileStamp{}}
}

// set makes files the watched set. A file watched already keeps its
// baseline, so a change made while a reload was loading is not missed; new
// files are stamped now.
func (w *watcher) set(files []string) {
	next := make(map[string]fileStamp, len(files))
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, f := range files {
		if st, ok := w.stamps[f]; ok {
			next[f] = st
			continue
		}
		st, _ := stampOf(f)
		next[f] = st
	}
	w.stamps = next
}

// files returns the watched files, sorted.
func (w *watcher) files() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]string, 0, len(w.stamps))
	for f := range w.stamps {
		out = append(out, f)
	}
	sort.Strings(out)
	return out
}

// run polls until ctx ends.
func (w *watcher) run(ctx context.Context) {
	t := time.NewTicker(w.interval)
	defer t.Stop()
	var pending []string          // files seen changing, not yet settled
	var last map[string]fileStamp // stamps at the previous poll while pending
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := w.poll()
		w.mu.Lock()
		var changed []string
		for f, base := range w.stamps {
			if now[f] != base {
				changed = append(changed, f)
			}
		}
		w.mu.Unlock()
		if len(changed) == 0 {
			pending, last = nil, nil
			continue
		}
		if pending != nil && equalStamps(last, now) {
			// Nothing moved since the last poll: settled.
			sort.Strings(pending)
			for _, f := range pending {
				w.log.Info(f + " changed; reloading...")
			}
			w.mu.Lock()
			for f := range w.stamps {
				w.stamps[f] = now[f]
			}
			w.mu.Unlock()
			pending, last = nil, nil
			select {
			case w.reload <- struct{}{}:
			default: // a reload is already asked for
			}
			continue
		}
		pending, last = changed, now
	}
}

func (w *watcher) poll() map[string]fileStamp {
	out := map[string]fileStamp{}
	for _, f := range w.files() {
		st, _ := stampOf(f)
		out[f] = st
	}
	return out
}

func equalStamps(a, b map[string]fileStamp) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
