package bridge

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/directus-bridge/directus-bridge/directus/directustest"
)

// BenchmarkReuseWithSlowDirectus measures returning clients (live token, no
// Directus request needed) while the revoker works through thousands of
// expired tokens against a Directus that takes 50ms per batch and fails
// (so the work never ends). The reference, measured first in the same run,
// is the same exchanges with the revoker idle. Metrics: p99 of both, and
// their ratio (1 means a slow Directus costs returning clients nothing), and
// the same for the 99.9th percentile.
func BenchmarkReuseWithSlowDirectus(b *testing.B) {
	bb := newBenchBridge(b, nil)
	ctx := context.Background()
	const clients = 256
	reqs := make([]Request, clients)
	for i := range reqs {
		reqs[i] = Request{SubjectToken: bb.issuers[jose.RS256].token(b, fmt.Sprintf("svc-slow-%d@clients", i), "items:read")}
		if _, err := bb.ex.Exchange(ctx, reqs[i]); err != nil {
			b.Fatal(err)
		}
	}
	// Expired tokens of 5,000 other users: every revoker run sends 25
	// batches, each holding up to 200 users while Directus is slow.
	past := time.Now().Add(-time.Minute)
	var recs []Record
	for i := range 5000 {
		recs = append(recs, Record{UserID: fmt.Sprintf("00000000-0000-5000-8000-%012d", i), Issuer: "bench-rs256",
			Client: fmt.Sprintf("expired-%d", i), Token: fmt.Sprintf("dbr_expired_%d", i), Expiry: past})
	}
	if err := bb.ex.store.PutAll(recs); err != nil {
		b.Fatal(err)
	}
	// p99 runs n exchanges and returns their 99th and 99.9th percentiles.
	p99 := func(n int) (time.Duration, time.Duration) {
		lat := make([]time.Duration, 0, n)
		for i := range n {
			start := time.Now()
			res, err := bb.ex.Exchange(ctx, reqs[i%clients])
			lat = append(lat, time.Since(start))
			if err != nil || res.Outcome != Reused {
				b.Fatalf("exchange: %v %v", res, err)
			}
		}
		slices.Sort(lat)
		return lat[len(lat)*99/100], lat[len(lat)*999/1000]
	}
	idle, idle999 := p99(20000)

	bb.fake.SetFault(func(r *http.Request) directustest.Fault {
		if r.Method == http.MethodPatch && r.URL.Path == "/users" {
			return directustest.Fault{Delay: 50 * time.Millisecond, Status: 503}
		}
		return directustest.Fault{}
	})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
				_, _ = bb.ex.RevokeExpired(ctx)
			}
		}
	}()
	time.Sleep(100 * time.Millisecond) // the revoker is inside a batch
	b.ResetTimer()
	var busy, busy999 time.Duration
	for b.Loop() {
		p, q := p99(2000)
		busy, busy999 = max(busy, p), max(busy999, q)
	}
	b.StopTimer()
	close(stop)
	wg.Wait()
	b.ReportMetric(float64(idle.Microseconds()), "p99-idle-us")
	b.ReportMetric(float64(busy.Microseconds()), "p99-busy-us")
	b.ReportMetric(float64(busy)/float64(idle), "p99-ratio")
	b.ReportMetric(float64(busy999)/float64(idle999), "p99.9-ratio")
}
