package runner

import (
	"context"
	"sync"
)

// cancelSet holds the cancel functions of contexts that must end together
// (a Mount's requests at Cut, a CoreScope's waits at Close) without a
// context.AfterFunc each on one shared context: that registered every one
// in a single map under a single lock, and each cost an afterFuncCtx and
// its removal besides. The set is sharded so that goroutines on different
// CPUs rarely share a lock; the caller picks the shard (a counter it keeps
// anyway), and removes what it added from that shard.
type cancelSet struct {
	shards [cancelShards]cancelShard
}

// cancelShards is the number of shards of a cancelSet.
const cancelShards = 16

type cancelShard struct {
	mu      sync.Mutex
	cancels map[context.Context]context.CancelCauseFunc // made on first add
	_       [64 - 16]byte                               // a cache line each (a Mutex and a map pointer are 16 bytes)
}

// add registers cancel, which ends ctx, in shard n (modulo the number of
// shards) and returns that shard, for remove.
func (s *cancelSet) add(n uint64, ctx context.Context, cancel context.CancelCauseFunc) *cancelShard {
	sh := &s.shards[n%cancelShards]
	sh.mu.Lock()
	if sh.cancels == nil {
		sh.cancels = map[context.Context]context.CancelCauseFunc{}
	}
	sh.cancels[ctx] = cancel
	sh.mu.Unlock()
	return sh
}

// remove forgets ctx; removing it again, or what was never added, does
// nothing.
func (sh *cancelShard) remove(ctx context.Context) {
	sh.mu.Lock()
	delete(sh.cancels, ctx)
	sh.mu.Unlock()
}

// cancelAll cancels every registered context with cause. A context added
// while it runs may be missed: who adds checks afterwards whether the set
// was cancelled meanwhile (the Mount's cut context, the scope's context)
// and cancels its own.
func (s *cancelSet) cancelAll(cause error) {
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for _, cancel := range sh.cancels {
			cancel(cause)
		}
		sh.mu.Unlock()
	}
}
