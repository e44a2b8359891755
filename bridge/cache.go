package bridge

import (
	"sync"
	"time"
)

// verifiedCache remembers verified subject tokens by their SHA-256, so that a
// client presenting the same token again does not pay for the signature check.
// An entry never outlives its token. The cache is bounded: when full, an
// arbitrary entry is evicted (expired ones first).
type verifiedCache struct {
	mu      sync.Mutex
	max     int
	entries map[[32]byte]*Identity
}

func newVerifiedCache(max int) *verifiedCache {
	return &verifiedCache{max: max, entries: make(map[[32]byte]*Identity)}
}

func (c *verifiedCache) get(key [32]byte, now time.Time) *Identity {
	if c.max <= 0 {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	id := c.entries[key]
	if id == nil {
		return nil
	}
	if !now.Before(id.Expiry) {
		delete(c.entries, key)
		return nil
	}
	return id
}

func (c *verifiedCache) put(key [32]byte, id *Identity, now time.Time) {
	if c.max <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= c.max {
		// Make room for a tenth of the cache at once, so that a full cache
		// pays for one sweep every max/10 new tokens, not one per token.
		for k, e := range c.entries {
			if !now.Before(e.Expiry) {
				delete(c.entries, k)
			}
		}
		for k := range c.entries {
			if len(c.entries) < c.max-max(c.max/10, 1) {
				break
			}
			delete(c.entries, k)
		}
	}
	c.entries[key] = id
}
