package bridge

import (
	"hash/fnv"
	"slices"
	"sync"
)

// stripes serialises work on one machine user (an exchange, a revocation)
// without a lock per user: ids hash onto a fixed set of mutexes.
type stripes [256]sync.Mutex

func stripe(id string) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(id))
	return int(h.Sum32() % 256)
}

// lock locks the stripe of id and returns its unlock.
func (s *stripes) lock(id string) func() {
	m := &s[stripe(id)]
	m.Lock()
	return m.Unlock
}

// lockAll locks the stripes of all ids, in index order so that two callers
// can never deadlock, and returns the unlock.
func (s *stripes) lockAll(ids []string) func() {
	idx := make([]int, 0, len(ids))
	for _, id := range ids {
		idx = append(idx, stripe(id))
	}
	slices.Sort(idx)
	idx = slices.Compact(idx)
	for _, i := range idx {
		s[i].Lock()
	}
	return func() {
		for _, i := range idx {
			s[i].Unlock()
		}
	}
}
