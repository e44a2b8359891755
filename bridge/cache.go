package bridge

import (
	"crypto/sha256"
	"hash/maphash"
	"sync"
	"time"
	"unsafe"
)

// verifiedCache remembers verified subject tokens, so that a client
// presenting the same token again does not pay for the signature check.
// An entry never outlives its token. The cache is bounded: when full, an
// arbitrary entry is evicted (expired ones first).
//
// Entries are found by a randomly seeded 64-bit hash of the token and
// confirmed by its SHA-256, which is all an entry keeps of it: a token
// that is not in the cache (any caller's made-up one) costs the fast hash
// only, a hit costs the SHA-256 too.
type verifiedCache struct {
	mu      sync.Mutex
	max     int
	seed    maphash.Seed
	entries map[uint64]cacheEntry
}

type cacheEntry struct {
	sum [sha256.Size]byte
	id  *Identity
}

func newVerifiedCache(max int) *verifiedCache {
	return &verifiedCache{max: max, seed: maphash.MakeSeed(), entries: make(map[uint64]cacheEntry)}
}

func (c *verifiedCache) get(raw string, now time.Time) *Identity {
	if c.max <= 0 {
		return nil
	}
	key := maphash.String(c.seed, raw)
	c.mu.Lock()
	e, ok := c.entries[key]
	c.mu.Unlock()
	if !ok || sum256(raw) != e.sum {
		return nil
	}
	if !now.Before(e.id.Expiry) {
		c.mu.Lock()
		if c.entries[key].id == e.id {
			delete(c.entries, key)
		}
		c.mu.Unlock()
		return nil
	}
	return e.id
}

func (c *verifiedCache) put(raw string, id *Identity, now time.Time) {
	if c.max <= 0 {
		return
	}
	key, sum := maphash.String(c.seed, raw), sum256(raw)
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= c.max {
		// Make room for a tenth of the cache at once, so that a full cache
		// pays for one sweep every max/10 new tokens, not one per token.
		for k, e := range c.entries {
			if !now.Before(e.id.Expiry) {
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
	c.entries[key] = cacheEntry{sum: sum, id: id}
}

// sum256 is the SHA-256 of s without copying s to a []byte first (a
// subject token is hundreds of bytes; a hit of the cache pays for this on
// every returning client's exchange). Sum256 only reads its argument.
func sum256(s string) [sha256.Size]byte {
	return sha256.Sum256(unsafe.Slice(unsafe.StringData(s), len(s)))
}

// clear drops every entry (the trusted issuers changed).
func (c *verifiedCache) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.entries)
}
