package bridge

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/directus-bridge/directus-bridge/bridge/state"
	"github.com/directus-bridge/directus-bridge/bridge/state/memstate"
)

// lostBackend is a Backend whose writes fail as after a takeover.
type lostBackend struct{ state.Backend }

func (lostBackend) Put(context.Context, []state.Entry) error {
	return fmt.Errorf("test: %w", state.ErrTakenOver)
}

// A Backend that lost the state to another process is reported once to
// OnLost (serve stops), and the write fails.
func TestStoreReportsTakeover(t *testing.T) {
	b, err := memstate.New().Open()
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewStore(lostBackend{b}, newKey(t))
	if err != nil {
		t.Fatal(err)
	}
	var lost []error
	s.OnLost(func(err error) { lost = append(lost, err) })
	for range 2 {
		if err := s.Put(Record{UserID: "u", Client: "c"}); !errors.Is(err, state.ErrTakenOver) {
			t.Fatalf("Put: %v, want ErrTakenOver", err)
		}
	}
	if len(lost) != 1 || !errors.Is(lost[0], state.ErrTakenOver) {
		t.Fatalf("OnLost called %d times (%v), want once with ErrTakenOver", len(lost), lost)
	}
	if _, ok := s.Get("u"); ok {
		t.Fatal("a refused write was kept in memory")
	}
}
