// Package memstate is a state.Backend in memory: nothing survives the
// process. For tests, and for the bridge's own in-memory Store.
package memstate

import (
	"bytes"
	"context"
	"fmt"
	"sync"

	"github.com/directus-bridge/directus-bridge/bridge/state"
)

// State is one in-memory state; Open gives its Backend, held by one opener
// at a time as a file or a database would be.
type State struct {
	mu      sync.Mutex
	held    bool
	records map[string][]byte
	meta    map[string][]byte
}

// New returns an empty state.
func New() *State {
	return &State{records: map[string][]byte{}, meta: map[string][]byte{}}
}

// Open returns the state's Backend, or state.ErrHeld while another is open.
func (s *State) Open() (state.Backend, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.held {
		return nil, fmt.Errorf("memstate: %w", state.ErrHeld)
	}
	s.held = true
	return &backend{s: s}, nil
}

type backend struct {
	s      *State
	closed bool
}

func (b *backend) Load(_ context.Context, fn func(string, []byte) error) error {
	b.s.mu.Lock()
	snap := make(map[string][]byte, len(b.s.records))
	for k, v := range b.s.records {
		snap[k] = v // values are never changed in place
	}
	b.s.mu.Unlock()
	for k, v := range snap {
		if err := fn(k, v); err != nil {
			return err
		}
	}
	return nil
}

func (b *backend) Put(_ context.Context, es []state.Entry) error {
	for _, e := range es {
		if err := state.Check(e); err != nil {
			return err
		}
	}
	b.s.mu.Lock()
	defer b.s.mu.Unlock()
	for _, e := range es {
		b.s.records[e.Key] = bytes.Clone(e.Value)
		if b.s.records[e.Key] == nil {
			b.s.records[e.Key] = []byte{}
		}
	}
	return nil
}

func (b *backend) Delete(_ context.Context, key string) error {
	b.s.mu.Lock()
	defer b.s.mu.Unlock()
	delete(b.s.records, key)
	return nil
}

func (b *backend) Meta(_ context.Context, key string) ([]byte, bool, error) {
	b.s.mu.Lock()
	defer b.s.mu.Unlock()
	v, ok := b.s.meta[key]
	return bytes.Clone(v), ok, nil
}

func (b *backend) SetMeta(_ context.Context, key string, value []byte) error {
	b.s.mu.Lock()
	defer b.s.mu.Unlock()
	b.s.meta[key] = append([]byte{}, value...)
	return nil
}

func (b *backend) Close() error {
	b.s.mu.Lock()
	defer b.s.mu.Unlock()
	if !b.closed {
		b.closed = true
		b.s.held = false
	}
	return nil
}
