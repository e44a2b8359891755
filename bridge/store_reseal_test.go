package bridge

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/directus-bridge/directus-bridge/bridge/state"
	"github.com/directus-bridge/directus-bridge/bridge/state/memstate"
)

// slowBackend is a Backend whose every Put takes delay, as a remote
// database does.
type slowBackend struct {
	state.Backend
	delay time.Duration
}

func (b slowBackend) Put(ctx context.Context, es []state.Entry) error {
	select {
	case <-time.After(b.delay):
	case <-ctx.Done():
		return ctx.Err()
	}
	return b.Backend.Put(ctx, es)
}

// A Reseal of many records (serve runs one at start after a key rotation)
// lets other writes in between its batches: an exchange that must write
// waits for one batch at most, not for the whole Reseal (it would fail
// with 503 after opTimeout). A record written meanwhile keeps its new
// value: Reseal does not write back an older copy of it.
func TestStoreResealLetsWritesInBetweenBatches(t *testing.T) {
	old := opTimeout
	opTimeout = 400 * time.Millisecond
	t.Cleanup(func() { opTimeout = old })
	k1, k2 := newKey(t), newKey(t)
	st := memstate.New()
	b, err := st.Open()
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewStore(b, k1)
	if err != nil {
		t.Fatal(err)
	}
	exp := time.Now().Add(time.Hour)
	var rs []Record
	for i := range 5000 { // 10 batches
		rs = append(rs, Record{UserID: fmt.Sprint("u", i), Client: "c", Token: fmt.Sprint("t", i), Expiry: exp})
	}
	if err := s.PutAll(rs); err != nil {
		t.Fatal(err)
	}
	s.Close()

	b, err = st.Open()
	if err != nil {
		t.Fatal(err)
	}
	const delay = 100 * time.Millisecond // the whole Reseal: 1 s, over opTimeout
	s, err = NewStore(slowBackend{b, delay}, k2, k1)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	done := make(chan error, 1)
	go func() { _, err := s.Reseal(); done <- err }()
	time.Sleep(delay / 2) // Reseal's first batch is being written
	r, _ := s.Get("u4999")
	r.Token = "newer"
	start := time.Now()
	if err := s.Put(r); err != nil {
		t.Fatalf("a write during Reseal: %v (took %s)", err, time.Since(start))
	}
	if err := <-done; err != nil {
		t.Fatalf("reseal: %v", err)
	}
	if n := s.SealedByOlderKeys(); n != 0 {
		t.Fatalf("SealedByOlderKeys = %d after Reseal", n)
	}
	if got, _ := s.Get("u4999"); got.Token != "newer" {
		t.Fatalf("u4999's token %q in memory, want the one written during Reseal", got.Token)
	}
	s.Close()
	b, err = st.Open()
	if err != nil {
		t.Fatal(err)
	}
	s2, err := NewStore(b, k2) // the old key gone: everything opens
	if err != nil {
		t.Fatalf("open with the new key only: %v", err)
	}
	defer s2.Close()
	if got, _ := s2.Get("u4999"); got.Token != "newer" {
		t.Fatalf("u4999's token %q in the state, want the one written during Reseal", got.Token)
	}
	if s2.Len() != 5000 {
		t.Fatalf("%d records, want 5000", s2.Len())
	}
}
