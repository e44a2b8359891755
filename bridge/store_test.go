package bridge

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/directus-bridge/directus-bridge/directus"
)

// BenchmarkStoreMemory100k measures the heap a state store holds with
// 100,000 known clients, each with a live token, scopes, a role, a policy and
// a few claims, after loading it from its file (as at a restart). The target
// is under 100 MB of RSS for the whole process.
func BenchmarkStoreMemory100k(b *testing.B) {
	const n = 100_000
	dir := b.TempDir()
	path := filepath.Join(dir, "state.db")
	key, err := LoadKey("", filepath.Join(dir, "state.key"))
	if err != nil {
		b.Fatal(err)
	}
	s, err := OpenStore(path, key)
	if err != nil {
		b.Fatal(err)
	}
	exp := time.Now().Add(time.Hour)
	// The exchange keeps only the claims some rule looks at (none here).
	var claims map[string][]string
	batch := make([]Record, 0, 1000)
	for i := range n {
		batch = append(batch, Record{
			UserID: fmt.Sprintf("00000000-0000-5000-8000-%012d", i), Issuer: "auth0", Client: fmt.Sprintf("client-%d@clients", i),
			Token: "dbr_" + fmt.Sprintf("%043d", i), Expiry: exp, Scopes: []string{"items:read", "my_service#read"},
			Role: "6f1c2b7e-0000-4000-8000-000000000001", Policies: []directus.Access{{Policy: "p1", ID: "a1"}},
			Audiences: []string{"https://api.example.com"}, Claims: claims,
			LastExchange: time.Now(),
		})
		if len(batch) == cap(batch) {
			if err := s.PutAll(batch); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	batch = nil
	var before, after runtime.MemStats
	debug.FreeOSMemory()
	runtime.ReadMemStats(&before)
	rssBefore := rssMB()
	var rss float64
	for b.Loop() {
		s, err = OpenStore(path, key)
		if err != nil {
			b.Fatal(err)
		}
		debug.FreeOSMemory()
		runtime.ReadMemStats(&after)
		rss = rssMB()
		if s.Len() != n {
			b.Fatalf("loaded %d records, want %d", s.Len(), n)
		}
		s.Close()
	}
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/(1<<20), "heap-MB")
	b.ReportMetric(rss, "rss-MB")
	b.ReportMetric(rss-rssBefore, "rss-growth-MB")
	if st, err := os.Stat(path); err == nil {
		b.ReportMetric(float64(st.Size())/(1<<20), "file-MB")
	}
}

// rssMB reads the process's resident set size.
func rssMB() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return float64(kb) / 1024
		}
	}
	return 0
}
