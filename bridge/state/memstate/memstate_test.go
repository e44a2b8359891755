package memstate_test

import (
	"testing"

	"github.com/directus-bridge/directus-bridge/bridge/state/conformance"
	"github.com/directus-bridge/directus-bridge/bridge/state/memstate"
)

func TestConformance(t *testing.T) {
	conformance.Run(t, func(t *testing.T) conformance.Opener { return memstate.New().Open })
}

func TestSharedConformance(t *testing.T) {
	conformance.RunShared(t, func(t *testing.T) conformance.SharedOpener { return memstate.NewShared().Open })
}
