package main

import (
	"errors"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/directus-bridge/directus-bridge/bridge"
	"github.com/directus-bridge/directus-bridge/bridge/state"
	"github.com/directus-bridge/directus-bridge/bridge/state/memstate"
)

func TestParseStates(t *testing.T) {
	tests := []struct {
		name    string
		value   string
		hasPG   bool
		want    []string
		wantErr bool
	}{
		{name: "default with a postgres DSN", value: "", hasPG: true, want: []string{"bbolt", "postgres"}},
		{name: "default without", value: "", hasPG: false, want: []string{"bbolt"}},
		{name: "postgres only", value: "postgres", hasPG: true, want: []string{"postgres"}},
		{name: "every backend", value: "bbolt,postgres,postgres-shared,postgres-shared2", hasPG: true,
			want: []string{"bbolt", "postgres", "postgres-shared", "postgres-shared2"}},
		{name: "shared without a DSN", value: "bbolt,postgres-shared", hasPG: false, wantErr: true},
		{name: "two replicas without a DSN", value: "postgres-shared2", hasPG: false, wantErr: true},
		{name: "shared twice", value: "postgres-shared,postgres-shared", hasPG: true, wantErr: true},
		{name: "spaces and order kept", value: " postgres , bbolt ", hasPG: true, want: []string{"postgres", "bbolt"}},
		{name: "postgres without a DSN", value: "bbolt,postgres", hasPG: false, wantErr: true},
		{name: "unknown backend", value: "bbolt,sqlite", hasPG: true, wantErr: true},
		{name: "twice", value: "bbolt,bbolt", hasPG: true, wantErr: true},
		{name: "empty item", value: "bbolt,", hasPG: true, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStates(tt.value, tt.hasPG)
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseStates(%q, %v) error %v, want error %v", tt.value, tt.hasPG, err, tt.wantErr)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("parseStates(%q, %v) = %q, want %q", tt.value, tt.hasPG, got, tt.want)
			}
		})
	}
}

func TestWithSearchPath(t *testing.T) {
	tests := []struct {
		name string
		dsn  string
	}{
		{name: "URL", dsn: "postgres://u:p%40ss@127.0.0.1:5432/db?sslmode=disable"},
		{name: "URL without query", dsn: "postgresql://u:pw@127.0.0.1:5432/db"},
		{name: "URL with a search_path already", dsn: "postgres://u:pw@127.0.0.1/db?search_path=public&sslmode=disable"},
		{name: "key=value", dsn: "host=127.0.0.1 port=5432 user=u password=pw dbname=db sslmode=disable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := withSearchPath(tt.dsn, "bridge_bench_ab12_postgres")
			if err != nil {
				t.Fatalf("withSearchPath: %v", err)
			}
			cfg, err := pgx.ParseConfig(got)
			if err != nil {
				t.Fatalf("the result does not parse: %v", err)
			}
			if sp := cfg.RuntimeParams["search_path"]; sp != "bridge_bench_ab12_postgres" {
				t.Errorf("search_path %q, want bridge_bench_ab12_postgres", sp)
			}
			orig, _ := pgx.ParseConfig(tt.dsn)
			if cfg.Password != orig.Password || cfg.Database != orig.Database || cfg.Host != orig.Host || cfg.User != orig.User {
				t.Errorf("connection settings changed: got %s@%s/%s, want %s@%s/%s",
					cfg.User, cfg.Host, cfg.Database, orig.User, orig.Host, orig.Database)
			}
		})
	}
}

func TestCountingBackend(t *testing.T) {
	ctx := t.Context()
	inner, err := memstate.New().Open()
	if err != nil {
		t.Fatal(err)
	}
	b := &countingBackend{Backend: inner}
	if err := b.Put(ctx, []state.Entry{{Key: "a", Value: []byte("1")}, {Key: "b", Value: []byte("2")}}); err != nil {
		t.Fatal(err)
	}
	if err := b.Delete(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if err := b.SetMeta(ctx, "cursor", []byte("3")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.Meta(ctx, "cursor"); err != nil {
		t.Fatal(err)
	}
	n := 0
	if err := b.Load(ctx, func(string, []byte) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("Load saw %d records, want 1 (the decorator must pass writes through)", n)
	}
	if got := b.writes.Load(); got != 3 {
		t.Errorf("writes %d, want 3 (one Put of two entries, one Delete, one SetMeta; reads not counted)", got)
	}
	if got := b.reads.Load(); got != 2 {
		t.Errorf("reads %d, want 2 (one Meta, one Load)", got)
	}
	if got := b.snapshot().calls(); got != 5 {
		t.Errorf("calls %d, want 5", got)
	}
}

func TestCountingShared(t *testing.T) {
	ctx := t.Context()
	inner, err := memstate.NewShared().Open()
	if err != nil {
		t.Fatal(err)
	}
	defer inner.Close()
	b := &countingShared{Shared: inner}
	unlock, err := b.Lock(ctx, []string{"a", "b"})
	if err != nil {
		t.Fatal(err)
	}
	vers, err := b.Write(ctx, []state.Write{{Key: "a", Value: []byte("1")}})
	if err != nil {
		t.Fatal(err)
	}
	// A conflicting write reaches the backend too: it counts.
	if _, err := b.Write(ctx, []state.Write{{Key: "a", Value: []byte("2")}}); !errors.Is(err, state.ErrConflict) {
		t.Fatalf("write of a present key expected absent: %v, want a conflict", err)
	}
	unlock()
	vs, err := b.Read(ctx, []string{"a"})
	if err != nil || len(vs) != 1 || vs[0].Version != vers[0] || string(vs[0].Value) != "1" {
		t.Fatalf("Read = %+v, %v; want a at version %d (the decorator must pass calls through)", vs, err, vers[0])
	}
	if err := b.Put(ctx, []state.Entry{{Key: "c", Value: []byte("3")}}); err != nil {
		t.Fatal(err)
	}
	if err := b.Delete(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	if err := b.SetMeta(ctx, "cursor", []byte("3")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.Meta(ctx, "cursor"); err != nil {
		t.Fatal(err)
	}
	if err := b.Load(ctx, func(string, []byte) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if held, _, err := b.Lease(ctx, "jobs", "me", time.Minute); err != nil || !held {
		t.Fatalf("Lease = %v, %v; want held", held, err)
	}
	if err := b.Release(ctx, "jobs", "me"); err != nil {
		t.Fatal(err)
	}
	got := b.snapshot()
	want := stateCounts{writes: 5, reads: 3, locks: 1, leases: 2}
	got.busy = 0
	if got != want {
		t.Errorf("counts %+v, want %+v (writes: 2 Write, Put, Delete, SetMeta; reads: Read, Meta, Load)", got, want)
	}
}

// TestReplicasCounted opens two replicas' Stores as openState does for
// postgres-shared2 (on the in-memory shared state) and checks what the rows
// rely on: the counters see the Stores' calls, the sum covers both
// replicas, and a returning client's record answered from memory costs no
// call at all.
func TestReplicasCounted(t *testing.T) {
	key := make([]byte, 32)
	mem := memstate.NewShared()
	bs := &benchState{name: "postgres-shared2", drop: func() error { return nil }}
	for range 2 {
		b, err := mem.Open()
		if err != nil {
			t.Fatal(err)
		}
		if err := bs.addStore(&countingShared{Shared: b}, key); err != nil {
			t.Fatal(err)
		}
	}
	defer bs.close(io.Discard)
	if !bs.shared() || len(bs.stores) != 2 || len(bs.counters) != 2 {
		t.Fatalf("shared %v, %d stores, %d counters; want a shared state with 2 of each", bs.shared(), len(bs.stores), len(bs.counters))
	}
	a, b := bs.stores[0], bs.stores[1]
	unlock, err := a.Lock(t.Context(), "u1")
	if err != nil {
		t.Fatal(err)
	}
	err = a.Put(bridge.Record{UserID: "u1", Issuer: "auth0", Client: "c1", Token: "tok", Expiry: time.Now().Add(time.Hour)})
	unlock()
	if err != nil {
		t.Fatal(err)
	}
	// The other replica hears of the write and reads the record (bounded:
	// the in-memory feed delivers at once).
	for i := 0; ; i++ {
		if r, ok := b.Reusable("u1"); ok && r.Token == "tok" {
			break
		}
		if i == 1000 {
			t.Fatal("the second replica never had the first one's record to reuse")
		}
		time.Sleep(5 * time.Millisecond)
	}
	ca, cb := bs.counters[0].snapshot(), bs.counters[1].snapshot()
	if ca.locks != 1 || ca.writes != 1 {
		t.Errorf("first replica: %d locks, %d writes; want 1 each (the Put under the lock)", ca.locks, ca.writes)
	}
	if cb.writes != 0 || cb.reads == 0 {
		t.Errorf("second replica: %d writes, %d reads; want no write and the refresh's read", cb.writes, cb.reads)
	}
	sum := bs.counts()
	if sum.calls() != ca.calls()+cb.calls() {
		t.Errorf("counts() has %d calls, the replicas %d and %d", sum.calls(), ca.calls(), cb.calls())
	}
	for range 100 {
		for _, s := range bs.stores {
			if _, ok := s.Reusable("u1"); !ok {
				t.Fatal("the record stopped being reusable")
			}
		}
	}
	if d := bs.counts().sub(sum); d.calls() != 0 {
		t.Errorf("answering from memory made %+v state calls, want none", d)
	}
}
