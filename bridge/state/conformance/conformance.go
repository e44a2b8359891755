// Package conformance is the test suite every state.Backend adapter passes:
// what the bridge's Store relies on, stated once, run against each adapter
// (in the style of Dex's storage/conformance).
package conformance

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/directus-bridge/directus-bridge/bridge/state"
)

// Opener opens one and the same state each time it is called.
type Opener func() (state.Backend, error)

// Run runs the suite. fresh returns an Opener of a new, empty state for
// each case; the suite closes what it opens.
func Run(t *testing.T, fresh func(t *testing.T) Opener) {
	for _, c := range []struct {
		name string
		fn   func(t *testing.T, open Opener)
	}{
		{"Empty", testEmpty},
		{"PutAndLoad", testPutAndLoad},
		{"BatchIsAtomic", testBatchIsAtomic},
		{"Delete", testDelete},
		{"Meta", testMeta},
		{"Persists", testPersists},
		{"HeldByOne", testHeldByOne},
		{"ValuesAreCopied", testValuesAreCopied},
		{"LoadWhileWriting", testLoadWhileWriting},
		{"LargeBatch", testLargeBatch},
		{"LoadError", testLoadError},
		{"SameKeyTwice", testSameKeyTwice},
	} {
		t.Run(c.name, func(t *testing.T) { c.fn(t, fresh(t)) })
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func mustOpen(t *testing.T, open Opener) state.Backend {
	t.Helper()
	b, err := open()
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	return b
}

func closeIt(t *testing.T, b state.Backend) {
	t.Helper()
	if err := b.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
}

// all loads every record into a map (values copied).
func all(t *testing.T, b state.Backend) map[string][]byte {
	t.Helper()
	m := map[string][]byte{}
	err := b.Load(ctx(t), func(k string, v []byte) error {
		if _, dup := m[k]; dup {
			return fmt.Errorf("key %q loaded twice", k)
		}
		m[k] = bytes.Clone(v)
		return nil
	})
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	return m
}

func same(t *testing.T, got map[string][]byte, want map[string][]byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d records, want %d: %v", len(got), len(want), keys(got))
	}
	for k, v := range want {
		g, ok := got[k]
		if !ok {
			t.Fatalf("record %q missing", k)
		}
		if !bytes.Equal(g, v) {
			t.Fatalf("record %q = %q, want %q", k, g, v)
		}
	}
}

func keys(m map[string][]byte) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func testEmpty(t *testing.T, open Opener) {
	b := mustOpen(t, open)
	defer closeIt(t, b)
	same(t, all(t, b), map[string][]byte{})
	if _, ok, err := b.Meta(ctx(t), "cursor"); err != nil || ok {
		t.Fatalf("meta of an empty state: ok %v, err %v", ok, err)
	}
}

func testPutAndLoad(t *testing.T, open Opener) {
	b := mustOpen(t, open)
	defer closeIt(t, b)
	want := map[string][]byte{
		"8ddcf8ea-0abc-5072-9a26-be43d6fdac3d": []byte(`{"a":1}`),
		"ünïcode-kéy":                          {0, 1, 2, 0xff, 0},
		"empty-value":                          {},
	}
	var es []state.Entry
	for k, v := range want {
		es = append(es, state.Entry{Key: k, Value: v})
	}
	if err := b.Put(ctx(t), es); err != nil {
		t.Fatal(err)
	}
	same(t, all(t, b), want)
	// Replacing a value.
	want["empty-value"] = []byte("now set")
	if err := b.Put(ctx(t), []state.Entry{{Key: "empty-value", Value: []byte("now set")}}); err != nil {
		t.Fatal(err)
	}
	same(t, all(t, b), want)
	// An empty batch is no error and changes nothing.
	if err := b.Put(ctx(t), nil); err != nil {
		t.Fatalf("empty batch: %v", err)
	}
	same(t, all(t, b), want)
}

func testBatchIsAtomic(t *testing.T, open Opener) {
	b := mustOpen(t, open)
	defer closeIt(t, b)
	if err := b.Put(ctx(t), []state.Entry{{Key: "kept", Value: []byte("v1")}}); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []state.Entry{
		{Key: "", Value: []byte("x")},
		{Key: string(bytes.Repeat([]byte("k"), state.MaxKeyBytes+1)), Value: []byte("x")},
		{Key: "huge", Value: make([]byte, state.MaxValueBytes+1)},
	} {
		err := b.Put(ctx(t), []state.Entry{
			{Key: "kept", Value: []byte("v2")}, {Key: "new", Value: []byte("n")}, bad,
		})
		if !errors.Is(err, state.ErrTooLarge) {
			t.Fatalf("a batch with a bad entry (key of %d bytes, value of %d): err %v, want ErrTooLarge", len(bad.Key), len(bad.Value), err)
		}
		same(t, all(t, b), map[string][]byte{"kept": []byte("v1")})
	}
}

func testDelete(t *testing.T, open Opener) {
	b := mustOpen(t, open)
	defer closeIt(t, b)
	if err := b.Put(ctx(t), []state.Entry{{Key: "a", Value: []byte("1")}, {Key: "b", Value: []byte("2")}}); err != nil {
		t.Fatal(err)
	}
	if err := b.Delete(ctx(t), "a"); err != nil {
		t.Fatal(err)
	}
	if err := b.Delete(ctx(t), "never-there"); err != nil {
		t.Fatalf("deleting an absent key: %v", err)
	}
	same(t, all(t, b), map[string][]byte{"b": []byte("2")})
}

func testMeta(t *testing.T, open Opener) {
	b := mustOpen(t, open)
	defer closeIt(t, b)
	for _, v := range [][]byte{[]byte("41"), []byte("42")} {
		if err := b.SetMeta(ctx(t), "activity_cursor", v); err != nil {
			t.Fatal(err)
		}
		got, ok, err := b.Meta(ctx(t), "activity_cursor")
		if err != nil || !ok || !bytes.Equal(got, v) {
			t.Fatalf("meta = %q %v %v, want %q", got, ok, err, v)
		}
	}
	// Meta values are not records, and records are not meta values.
	if err := b.Put(ctx(t), []state.Entry{{Key: "activity_cursor", Value: []byte("record")}}); err != nil {
		t.Fatal(err)
	}
	same(t, all(t, b), map[string][]byte{"activity_cursor": []byte("record")})
	if got, _, _ := b.Meta(ctx(t), "activity_cursor"); string(got) != "42" {
		t.Fatalf("a record of the same key changed the meta value: %q", got)
	}
}

func testPersists(t *testing.T, open Opener) {
	b := mustOpen(t, open)
	if err := b.Put(ctx(t), []state.Entry{{Key: "a", Value: []byte("1")}, {Key: "b", Value: []byte("2")}}); err != nil {
		t.Fatal(err)
	}
	if err := b.Delete(ctx(t), "b"); err != nil {
		t.Fatal(err)
	}
	if err := b.SetMeta(ctx(t), "m", []byte("v")); err != nil {
		t.Fatal(err)
	}
	closeIt(t, b)
	b = mustOpen(t, open)
	defer closeIt(t, b)
	same(t, all(t, b), map[string][]byte{"a": []byte("1")})
	if got, ok, err := b.Meta(ctx(t), "m"); err != nil || !ok || string(got) != "v" {
		t.Fatalf("meta after reopening = %q %v %v", got, ok, err)
	}
}

func testHeldByOne(t *testing.T, open Opener) {
	b := mustOpen(t, open)
	start := time.Now()
	second, err := open()
	if err == nil {
		second.Close()
		b.Close()
		t.Fatal("a second open of a held state succeeded")
	}
	if !errors.Is(err, state.ErrHeld) {
		t.Fatalf("second open: %v, want ErrHeld", err)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Fatalf("the second open took %s to fail", d)
	}
	// The holder is unaffected, and after it closes the state can be opened.
	if err := b.Put(ctx(t), []state.Entry{{Key: "a", Value: []byte("1")}}); err != nil {
		t.Fatalf("the holder after a refused open: %v", err)
	}
	closeIt(t, b)
	b = mustOpen(t, open)
	defer closeIt(t, b)
	same(t, all(t, b), map[string][]byte{"a": []byte("1")})
}

func testValuesAreCopied(t *testing.T, open Opener) {
	b := mustOpen(t, open)
	defer closeIt(t, b)
	v := []byte("original")
	if err := b.Put(ctx(t), []state.Entry{{Key: "a", Value: v}}); err != nil {
		t.Fatal(err)
	}
	copy(v, "CHANGED!")
	m := []byte("meta")
	if err := b.SetMeta(ctx(t), "m", m); err != nil {
		t.Fatal(err)
	}
	copy(m, "MUT!")
	same(t, all(t, b), map[string][]byte{"a": []byte("original")})
	if got, _, _ := b.Meta(ctx(t), "m"); string(got) != "meta" {
		t.Fatalf("meta value aliased the caller's slice: %q", got)
	}
}

func testLoadWhileWriting(t *testing.T, open Opener) {
	b := mustOpen(t, open)
	defer closeIt(t, b)
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	wg.Add(1)
	go func() { // one writer, as the Store writes
		defer wg.Done()
		for i := range 50 {
			if err := b.Put(context.Background(), []state.Entry{{Key: fmt.Sprint("k", i), Value: []byte(fmt.Sprint(i))}}); err != nil {
				errs <- err
				return
			}
		}
	}()
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10 {
				if err := b.Load(context.Background(), func(string, []byte) error { return nil }); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := len(all(t, b)); n != 50 {
		t.Fatalf("%d records after 50 puts", n)
	}
}

func testLargeBatch(t *testing.T, open Opener) {
	b := mustOpen(t, open)
	defer closeIt(t, b)
	want := map[string][]byte{}
	var es []state.Entry
	for i := range 5000 {
		k, v := fmt.Sprintf("user-%05d", i), bytes.Repeat([]byte{byte(i)}, 300)
		want[k] = v
		es = append(es, state.Entry{Key: k, Value: v})
	}
	if err := b.Put(ctx(t), es); err != nil {
		t.Fatal(err)
	}
	same(t, all(t, b), want)
}

func testLoadError(t *testing.T, open Opener) {
	b := mustOpen(t, open)
	defer closeIt(t, b)
	if err := b.Put(ctx(t), []state.Entry{{Key: "a", Value: []byte("1")}, {Key: "b", Value: []byte("2")}}); err != nil {
		t.Fatal(err)
	}
	stop := errors.New("stop")
	calls := 0
	err := b.Load(ctx(t), func(string, []byte) error { calls++; return stop })
	if !errors.Is(err, stop) || calls != 1 {
		t.Fatalf("Load after fn's error: err %v after %d calls, want stop after 1", err, calls)
	}
}

// testSameKeyTwice: of a key given twice in one batch, the last value is
// kept (PutAll takes any slice of records).
func testSameKeyTwice(t *testing.T, open Opener) {
	b := mustOpen(t, open)
	defer closeIt(t, b)
	err := b.Put(ctx(t), []state.Entry{
		{Key: "a", Value: []byte("1")}, {Key: "b", Value: []byte("x")}, {Key: "a", Value: []byte("2")},
	})
	if err != nil {
		t.Fatal(err)
	}
	same(t, all(t, b), map[string][]byte{"a": []byte("2"), "b": []byte("x")})
}
