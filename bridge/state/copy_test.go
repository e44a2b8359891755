package state_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/directus-bridge/directus-bridge/bridge/state"
	"github.com/directus-bridge/directus-bridge/bridge/state/boltstate"
	"github.com/directus-bridge/directus-bridge/bridge/state/memstate"
)

func open(t *testing.T, s *memstate.State) state.Backend {
	t.Helper()
	b, err := s.Open()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func contents(t *testing.T, b state.Backend) (map[string][]byte, map[string][]byte) {
	t.Helper()
	recs := map[string][]byte{}
	if err := b.Load(t.Context(), func(k string, v []byte) error {
		recs[k] = bytes.Clone(v)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	meta := map[string][]byte{}
	for _, k := range state.MetaKeys {
		v, ok, err := b.Meta(t.Context(), k)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			meta[k] = v
		}
	}
	return recs, meta
}

func sameContents(t *testing.T, what string, got, want map[string][]byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d entries, want %d", what, len(got), len(want))
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || !bytes.Equal(g, v) {
			t.Fatalf("%s: %q = %q (present %v), want %q", what, k, g, ok, v)
		}
	}
}

// fill puts n records (values of varied sizes, one empty) and the cursor.
func fill(t *testing.T, b state.Backend, n int) {
	t.Helper()
	var es []state.Entry
	for i := range n {
		v := bytes.Repeat([]byte{byte(i)}, i%97)
		es = append(es, state.Entry{Key: fmt.Sprintf("user-%05d", i), Value: v})
	}
	if err := b.Put(t.Context(), es); err != nil {
		t.Fatal(err)
	}
	if err := b.SetMeta(t.Context(), "activity_cursor", []byte("4711")); err != nil {
		t.Fatal(err)
	}
}

// A state survives memstate → bbolt → memstate byte for byte, records and
// cursor, in batches.
func TestCopyRoundTrip(t *testing.T) {
	const n = 1234 // over two batches and a part
	src := open(t, memstate.New())
	fill(t, src, n)
	wantRecs, wantMeta := contents(t, src)

	bolt, err := boltstate.Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bolt.Close() })
	puts := &counting{Backend: bolt}
	got, err := state.Copy(t.Context(), puts, src)
	if err != nil || got != n {
		t.Fatalf("copy to bbolt: %d, %v; want %d, nil", got, err, n)
	}
	if wantPuts := (n + state.CopyBatch - 1) / state.CopyBatch; puts.puts != wantPuts || puts.largest > state.CopyBatch {
		t.Fatalf("copy to bbolt: %d Puts of at most %d entries, want %d of at most %d", puts.puts, puts.largest, wantPuts, state.CopyBatch)
	}
	recs, meta := contents(t, bolt)
	sameContents(t, "bbolt records", recs, wantRecs)
	sameContents(t, "bbolt meta", meta, wantMeta)

	back := open(t, memstate.New())
	if got, err := state.Copy(t.Context(), back, bolt); err != nil || got != n {
		t.Fatalf("copy back: %d, %v; want %d, nil", got, err, n)
	}
	recs, meta = contents(t, back)
	sameContents(t, "records after the round trip", recs, wantRecs)
	sameContents(t, "meta after the round trip", meta, wantMeta)
}

// An empty source copies nothing and is no error; a source without a
// cursor leaves the destination without one.
func TestCopyEmptyAndNoCursor(t *testing.T) {
	dst := open(t, memstate.New())
	if n, err := state.Copy(t.Context(), dst, open(t, memstate.New())); n != 0 || err != nil {
		t.Fatalf("empty source: %d, %v", n, err)
	}
	src := open(t, memstate.New())
	if err := src.Put(t.Context(), []state.Entry{{Key: "u1", Value: []byte("v")}}); err != nil {
		t.Fatal(err)
	}
	if n, err := state.Copy(t.Context(), dst, src); n != 1 || err != nil {
		t.Fatalf("copy: %d, %v", n, err)
	}
	if _, ok, _ := dst.Meta(t.Context(), "activity_cursor"); ok {
		t.Fatal("the destination has a cursor the source did not have")
	}
}

// A destination holding anything (a record, or only a meta value) is
// refused, and left as it was.
func TestCopyRefusesNonEmptyDestination(t *testing.T) {
	for _, tc := range []struct {
		name    string
		prepare func(t *testing.T, b state.Backend)
	}{
		{"a record", func(t *testing.T, b state.Backend) {
			if err := b.Put(t.Context(), []state.Entry{{Key: "user-00001", Value: []byte("theirs")}}); err != nil {
				t.Fatal(err)
			}
		}},
		{"only the cursor", func(t *testing.T, b state.Backend) {
			if err := b.SetMeta(t.Context(), "activity_cursor", []byte("9")); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := open(t, memstate.New())
			fill(t, src, 10)
			dst := open(t, memstate.New())
			tc.prepare(t, dst)
			beforeRecs, beforeMeta := contents(t, dst)
			n, err := state.Copy(t.Context(), dst, src)
			if !errors.Is(err, state.ErrNotEmpty) || n != 0 {
				t.Fatalf("copy into a non-empty state: %d, %v; want 0, ErrNotEmpty", n, err)
			}
			recs, meta := contents(t, dst)
			sameContents(t, "records", recs, beforeRecs)
			sameContents(t, "meta", meta, beforeMeta)
		})
	}
}

// A destination that fails midway: the error says how many records were
// written before it, and the count is returned.
func TestCopyFailingDestination(t *testing.T) {
	src := open(t, memstate.New())
	fill(t, src, 3*state.CopyBatch)
	dst := &counting{Backend: open(t, memstate.New()), failAt: 2}
	n, err := state.Copy(t.Context(), dst, src)
	if err == nil || !errors.Is(err, errDisk) {
		t.Fatalf("copy: %v, want the destination's error", err)
	}
	if n != state.CopyBatch {
		t.Fatalf("copy: %d records reported written, want %d", n, state.CopyBatch)
	}
	if want := fmt.Sprintf("(%d records written before)", state.CopyBatch); !strings.Contains(err.Error(), want) {
		t.Fatalf("copy: error %q does not say %q", err, want)
	}
	recs, meta := contents(t, dst.Backend)
	if len(recs) != n || len(meta) != 0 {
		t.Fatalf("destination holds %d records and %d meta values, want %d and 0 (the cursor comes last)", len(recs), len(meta), n)
	}
}

var errDisk = errors.New("disk full")

// counting counts Puts and fails the failAt-th (from 1; 0 never).
type counting struct {
	state.Backend
	puts, largest, failAt int
}

func (c *counting) Put(ctx context.Context, es []state.Entry) error {
	c.puts++
	c.largest = max(c.largest, len(es))
	if c.puts == c.failAt {
		return errDisk
	}
	return c.Backend.Put(ctx, es)
}
