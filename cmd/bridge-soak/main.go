// Command bridge-soak runs a bounded soak of the bridge against the real
// test stack: mixed exchanges (returning clients, new clients, rotations)
// and reconcile runs on loopback for a fixed time, and reports heap and
// goroutine counts before and after, so that leaks show as growth.
//
//	DIRECTUS_BRIDGE_STACK=/tmp/directus-bridge-stack/stack.json go run ./cmd/bridge-soak -duration 5m
//
// It is opt-in (make soak), not part of make test.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/directus-bridge/directus-bridge/bridge"
	"github.com/directus-bridge/directus-bridge/directus"
	"github.com/directus-bridge/directus-bridge/mapping"
)

type stackFile struct {
	Directus []struct {
		Name, Version, URL string
		AdminToken         string `json:"admin_token"`
	} `json:"directus"`
	IdP struct {
		Issuers map[string]struct {
			Issuer               string `json:"issuer"`
			TokenEndpoint        string `json:"token_endpoint"`
			RegistrationEndpoint string `json:"registration_endpoint"`
			Audience             string `json:"audience"`
		} `json:"issuers"`
	} `json:"idp"`
}

func main() {
	duration := flag.Duration("duration", 5*time.Minute, "how long to soak")
	workers := flag.Int("workers", 4, "concurrent clients")
	maxRequests := flag.Int64("max-requests", 2_000_000, "stop after this many exchanges")
	which := flag.Int("directus", 0, "index of the Directus in stack.json")
	flag.Parse()
	if err := run(*duration, *workers, *maxRequests, *which); err != nil {
		fmt.Fprintln(os.Stderr, "bridge-soak:", err)
		os.Exit(1)
	}
}

type sample struct {
	heap       uint64
	goroutines int
	rss        string
}

func measure() sample {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	rss := "?"
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, l := range bytes.Split(b, []byte("\n")) {
			if v, ok := bytes.CutPrefix(l, []byte("VmRSS:")); ok {
				rss = string(bytes.TrimSpace(v))
			}
		}
	}
	return sample{heap: m.HeapAlloc, goroutines: runtime.NumGoroutine(), rss: rss}
}

func run(duration time.Duration, workers int, maxRequests int64, which int) error {
	b, err := os.ReadFile(os.Getenv("DIRECTUS_BRIDGE_STACK"))
	if err != nil {
		return fmt.Errorf("DIRECTUS_BRIDGE_STACK: %w", err)
	}
	var st stackFile
	if err := json.Unmarshal(b, &st); err != nil {
		return err
	}
	d := st.Directus[which]
	idp := st.IdP.Issuers["auth0"]
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	admin, err := directus.New(d.URL, d.AdminToken, directus.Options{})
	if err != nil {
		return err
	}
	role, err := admin.CreateRole(ctx, directus.Role{Name: fmt.Sprintf("soak-%d", time.Now().UnixNano())})
	if err != nil {
		return err
	}
	ex, err := bridge.NewExchanger(bridge.Options{
		Issuers:  []bridge.IssuerConfig{{Name: "auth0", Issuer: idp.Issuer, Audiences: []string{idp.Audience}}},
		Tokens:   bridge.TokenConfig{TTL: bridge.Duration(20 * time.Second), RotateBefore: bridge.Duration(10 * time.Second), RevokeInterval: bridge.Duration(time.Second)},
		Directus: admin, Store: bridge.NewMemoryStore(), Logger: slog.New(slog.NewJSONHandler(io.Discard, nil)),
		Limits: bridge.LimitsConfig{PerIP: bridge.RateLimit{Rate: -1}, PerClient: bridge.RateLimit{Rate: -1}},
	})
	if err != nil {
		return err
	}
	m, _, err := bridge.LoadMapper(ctx, admin, mapping.Rules{{AnyScopes: []string{"soak"}, Role: role.ID}})
	if err != nil {
		return err
	}
	ex.SetMapper(m)
	go ex.RunRevoker(ctx)
	srv := httptest.NewServer((&bridge.Server{Exchanger: ex}).Handler())
	defer srv.Close()

	// 50 clients; each worker cycles through them, so most exchanges reuse,
	// some rotate (TTL 20s), and every 30s a new batch of clients appears.
	newSubject := func() (string, error) {
		body, _ := json.Marshal(map[string]any{"grant_types": []string{"client_credentials"}, "scope": "soak", "token_ttl": 3600})
		resp, err := http.Post(idp.RegistrationEndpoint, "application/json", bytes.NewReader(body))
		if err != nil {
			return "", err
		}
		var c struct{ ClientID, ClientSecret string }
		var raw map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&raw)
		resp.Body.Close()
		c.ClientID, _ = raw["client_id"].(string)
		c.ClientSecret, _ = raw["client_secret"].(string)
		resp, err = http.PostForm(idp.TokenEndpoint, url.Values{"grant_type": {"client_credentials"},
			"client_id": {c.ClientID}, "client_secret": {c.ClientSecret}})
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		var tok struct {
			AccessToken string `json:"access_token"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil || tok.AccessToken == "" {
			return "", fmt.Errorf("token: %v", err)
		}
		return tok.AccessToken, nil
	}
	var mu sync.Mutex
	var subjects []string
	addClients := func(n int) error {
		for range n {
			s, err := newSubject()
			if err != nil {
				return err
			}
			mu.Lock()
			subjects = append(subjects, s)
			mu.Unlock()
		}
		return nil
	}
	if err := addClients(50); err != nil {
		return err
	}
	// Warm up, then measure the baseline.
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
	exchange := func(s string) int {
		resp, err := client.PostForm(srv.URL+"/oauth/token", url.Values{"grant_type": {bridge.GrantTypeTokenExchange},
			"subject_token": {s}, "subject_token_type": {bridge.TokenTypeAccessToken}})
		if err != nil {
			return 0
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, s := range subjects {
		exchange(s)
	}
	before := measure()
	fmt.Printf("soak: %s against %s (%s), %d workers, %v\n", srv.URL, d.Name, d.Version, workers, duration)
	fmt.Printf("before: heap %d KiB, goroutines %d, RSS %s\n", before.heap/1024, before.goroutines, before.rss)

	start := time.Now()
	deadline := start.Add(duration)
	var count, failures, reconciles atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; time.Now().Before(deadline) && count.Load() < maxRequests; i++ {
				mu.Lock()
				s := subjects[i%len(subjects)]
				mu.Unlock()
				if code := exchange(s); code != 200 {
					failures.Add(1)
				}
				count.Add(1)
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for next := time.Now(); time.Now().Before(deadline) && count.Load() < maxRequests; next = next.Add(10 * time.Second) {
			time.Sleep(time.Until(next))
			if _, err := ex.Reconcile(ctx, bridge.ReconcileConfig{SuspendAfter: -1}, false); err == nil {
				reconciles.Add(1)
			}
			if time.Since(next) > 0 && reconciles.Load()%3 == 0 {
				_ = addClients(5)
			}
		}
	}()
	wg.Wait()
	elapsed := time.Since(start)
	client.CloseIdleConnections()
	time.Sleep(time.Second)
	after := measure()
	fmt.Printf("after:  heap %d KiB, goroutines %d, RSS %s\n", after.heap/1024, after.goroutines, after.rss)
	fmt.Printf("exchanges %d in %s (%.0f/s), non-200 %d, reconcile runs %d, clients %d\n",
		count.Load(), elapsed.Round(time.Second), float64(count.Load())/elapsed.Seconds(), failures.Load(), reconciles.Load(), len(subjects))
	fmt.Printf("growth: heap %+d KiB, goroutines %+d\n", int64(after.heap/1024)-int64(before.heap/1024), after.goroutines-before.goroutines)
	return nil
}
