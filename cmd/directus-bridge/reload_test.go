package main

import (
	"slices"
	"testing"
	"time"

	"github.com/directus-bridge/directus-bridge/bridge"
)

func TestChangedKeysAndRestart(t *testing.T) {
	a := Config{Listen: ":8080", Tokens: bridge.TokenConfig{TTL: bridge.Duration(time.Minute)},
		Directus: DirectusConfig{URL: "http://d"}, Issuers: []bridge.IssuerConfig{{Name: "a"}}}
	b := a
	b.Listen = ":9090"
	b.Tokens.TTL = bridge.Duration(2 * time.Minute)
	b.Directus.URL = "http://e"
	b.Issuers = []bridge.IssuerConfig{{Name: "b"}}
	b.Reconcile.WatchInterval = bridge.Duration(time.Second)
	got := changedKeys(a, b)
	want := []string{"listen", "directus.url", "tokens.ttl", "issuers", "reconcile.watch_interval"}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("changedKeys = %v, want %v", got, want)
	}
	for k, restart := range map[string]bool{"listen": true, "directus.url": true, "tokens.ttl": false, "issuers": false,
		"reconcile.watch_interval": true, "reconcile.schedule": false, "limits.per_ip.rate": false, "users.namespace": true} {
		if needsRestart(k) != restart {
			t.Errorf("needsRestart(%s) = %v, want %v", k, !restart, restart)
		}
	}
}
