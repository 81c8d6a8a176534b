package natscore

// cachedTopics returns how many topics this node holds a stream handle
// and a message consumer for.
func (c *Core) cachedTopics() (streams, notify int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.streams.Len(), len(c.notify)
}

// setStreamCacheSize bounds the stream handles c holds to n.
func (c *Core) setStreamCacheSize(n int) { c.streams.Resize(n) }
