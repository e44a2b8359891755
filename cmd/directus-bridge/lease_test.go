package main

import (
	"log/slog"
	"testing"
	"time"

	"github.com/directus-bridge/directus-bridge/bridge"
)

// The jobs lease lives the revoke interval in force: its default when the
// configuration leaves it out (a lease of a second would move between
// replicas on any pause), at least a second when it is shorter.
func TestLeaseTTL(t *testing.T) {
	for _, c := range []struct {
		interval time.Duration
		want     time.Duration
	}{{0, 5 * time.Second}, {2 * time.Second, 2 * time.Second}, {100 * time.Millisecond, time.Second}} {
		ex, err := bridge.NewExchanger(bridge.Options{Tokens: bridge.TokenConfig{RevokeInterval: bridge.Duration(c.interval)},
			Store: bridge.NewMemoryStore(), Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		if got := leaseTTL(ex); got != c.want {
			t.Errorf("revoke_interval %v: lease TTL %v, want %v", c.interval, got, c.want)
		}
	}
}
