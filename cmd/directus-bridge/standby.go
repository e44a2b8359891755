package main

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/directus-bridge/directus-bridge/bridge"
	"github.com/directus-bridge/directus-bridge/bridge/state"
)

// holdState opens the state. With state.standby, while another process
// holds it, the bridge is a standby: handler answers alive, not ready,
// exchanges 503, and the state is tried again until this process holds it
// or ctx ends.
func holdState(ctx context.Context, cfg *Config, handler *atomic.Pointer[http.Handler], log *slog.Logger) (*bridge.Store, error) {
	store, err := openStore(ctx, cfg, true)
	if !cfg.State.Standby || !errors.Is(err, state.ErrHeld) {
		return store, err
	}
	log.Info("standby: another directus-bridge process holds the state; this one takes over when it goes", "holder", err.Error())
	standby := waitingHandler("standby: another process holds the state")
	handler.Store(&standby)
	start, logged := time.Now(), time.Now()
	wait := 200 * time.Millisecond
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
		wait = 200 * time.Millisecond
		store, err = openStore(ctx, cfg, true) // waits for the hold a few seconds itself
		switch {
		case err == nil:
			log.Info("standby: took over the state", "waited", time.Since(start).Round(time.Millisecond).String())
			return store, nil
		case !errors.Is(err, state.ErrHeld):
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			// Not held, yet not opened (the database away, a key that
			// opens nothing): each try loads the state, so back off.
			wait = 5 * time.Second
			log.Warn("standby: the state cannot be opened; trying again in 5s", "err", err)
		case time.Since(logged) >= 30*time.Second:
			log.Info("standby: still waiting for the state", "waited", time.Since(start).Round(time.Second).String())
			logged = time.Now()
		}
	}
}

// waitingHandler answers while the bridge cannot exchange yet (it opens
// its state, or is a standby): /healthz 200 (the process is fine), /readyz
// 503 with the reason (send no exchanges here), /oauth/token 503 with
// Retry-After, anything else 404.
func waitingHandler(reason string) http.Handler {
	reply := func(w http.ResponseWriter, status int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(v)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		reply(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		reply(w, http.StatusServiceUnavailable, map[string]string{"state": "failing", "state.reason": reason})
	})
	mux.HandleFunc("/oauth/token", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Retry-After", "5")
		reply(w, http.StatusServiceUnavailable, map[string]string{"error": "temporarily_unavailable",
			"error_description": "the bridge cannot exchange yet (" + reason + "); retry"})
	})
	return mux
}
