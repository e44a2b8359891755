package boltstate_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/directus-bridge/directus-bridge/bridge/state"
	"github.com/directus-bridge/directus-bridge/bridge/state/boltstate"
	"github.com/directus-bridge/directus-bridge/bridge/state/conformance"
)

func TestConformance(t *testing.T) {
	boltstate.HoldTimeout = 200 * time.Millisecond
	conformance.Run(t, func(t *testing.T) conformance.Opener {
		path := filepath.Join(t.TempDir(), "state.db")
		return func() (state.Backend, error) { return boltstate.Open(path) }
	})
}
