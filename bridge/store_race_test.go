package bridge

import (
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// Flush (the revoker runs it every revoke interval) must never write back
// an older copy of a record over a concurrent Put: the reuse path would hand
// out a token Directus no longer holds.
func TestFlushNeverUndoesAConcurrentPut(t *testing.T) {
	s, err := OpenStore(filepath.Join(t.TempDir(), "state.db"), make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	now := time.Now()
	clean := Record{UserID: "u1", Issuer: "auth0", IssuerURL: "https://idp/", Client: "c", Token: "dbr_old",
		Expiry: now.Add(time.Hour), Bound: true}
	lost := 0
	for i := range 300 {
		if err := s.Put(clean); err != nil {
			t.Fatal(err)
		}
		s.Touch("u1", now.Add(time.Duration(i+1)*time.Millisecond)) // a reuse: the record is dirty
		rotated := clean
		rotated.Token, rotated.Expiry = "dbr_new", now.Add(2*time.Hour)
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); _ = s.Flush() }()
		go func() { defer wg.Done(); _ = s.Put(rotated) }()
		wg.Wait()
		if r, _ := s.Get("u1"); r.Token != "dbr_new" {
			lost++
		}
	}
	if lost > 0 {
		t.Errorf("%d of 300 rotations were undone by a concurrent Flush", lost)
	}
}

// One indebted bucket at the old end must not keep the refilled buckets
// behind it from being forgotten: new callers would all share the overflow
// bucket for the price of about max_tracked requests.
func TestLimiterOneIndebtedBucketLocksOutNobody(t *testing.T) {
	const max = 1000
	now := time.Unix(1_700_000_000, 0)
	l := makeLimiter(RateLimit{Rate: 100, Burst: 200}, max, addrGrouping{v4: 32, v6: 64}.key, func() time.Time { return now })
	for range 200 {
		l.allow("198.51.100.1") // drained: in debt for burst/rate = 2s
	}
	for i := 1; i < max; i++ {
		l.allow(fmt.Sprintf("2001:db8:%x:%x::1", i>>16, i&0xffff))
	}
	now = now.Add(1500 * time.Millisecond) // the one-request buckets have refilled
	for i := range 200 {
		l.allow(fmt.Sprintf("2001:db8:ffff:%x::1", i))
	}
	if ok, _ := l.allow("203.0.113.7"); !ok {
		t.Errorf("a new caller's first request is refused after about %d requests in 1.5 s", max+400)
	}
}
