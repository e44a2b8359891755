package state

import (
	"bytes"
	"context"
	"errors"
	"fmt"
)

// MetaKeys are the meta keys the bridge uses: what Copy copies beside the
// records.
var MetaKeys = []string{"activity_cursor"}

// CopyBatch is how many records one Put of Copy writes: a large state is
// written in many short transactions rather than one giant one.
const CopyBatch = 500

// ErrNotEmpty is returned (wrapped) by Copy when the destination already
// holds a record or a meta value: Copy never overwrites or merges a state.
var ErrNotEmpty = errors.New("the destination state is not empty")

// errFound ends the emptiness check's Load at the first record.
var errFound = errors.New("found")

// Copy copies every record and every meta value of MetaKeys from src to
// dst as they are (tokens stay sealed: no key is needed), CopyBatch records
// per Put, the meta values last. It refuses, writing nothing, when dst
// holds anything. It returns how many records it wrote: on an error, those
// written before it (dst then holds them and no meta value).
func Copy(ctx context.Context, dst, src Backend) (records int, err error) {
	if err := dst.Load(ctx, func(string, []byte) error { return errFound }); errors.Is(err, errFound) {
		return 0, fmt.Errorf("state: copy: %w: it holds records", ErrNotEmpty)
	} else if err != nil {
		return 0, fmt.Errorf("state: copy: read the destination: %w", err)
	}
	for _, k := range MetaKeys {
		if _, ok, err := dst.Meta(ctx, k); err != nil {
			return 0, fmt.Errorf("state: copy: read the destination: %w", err)
		} else if ok {
			return 0, fmt.Errorf("state: copy: %w: it holds %s", ErrNotEmpty, k)
		}
	}
	batch := make([]Entry, 0, CopyBatch)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if err := dst.Put(ctx, batch); err != nil {
			return fmt.Errorf("state: copy: write: %w (%d records written before)", err, records)
		}
		records += len(batch)
		batch = batch[:0]
		return nil
	}
	// A source's value may be valid only during fn: each is copied.
	var werr error
	err = src.Load(ctx, func(k string, v []byte) error {
		batch = append(batch, Entry{Key: k, Value: bytes.Clone(v)})
		if len(batch) == CopyBatch {
			werr = flush()
		}
		return werr
	})
	switch {
	case werr != nil:
		return records, werr
	case err != nil:
		return records, fmt.Errorf("state: copy: read the source: %w (%d records written before)", err, records)
	}
	if err := flush(); err != nil {
		return records, err
	}
	for _, k := range MetaKeys {
		v, ok, err := src.Meta(ctx, k)
		if err != nil {
			return records, fmt.Errorf("state: copy: read %s: %w", k, err)
		}
		if !ok {
			continue
		}
		if err := dst.SetMeta(ctx, k, v); err != nil {
			return records, fmt.Errorf("state: copy: write %s: %w", k, err)
		}
	}
	return records, nil
}
