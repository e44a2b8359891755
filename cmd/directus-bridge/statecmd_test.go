package main

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/directus-bridge/directus-bridge/bridge"
)

func randomKey(t *testing.T) string {
	t.Helper()
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(k)
}

// Rotating the state key with the command: the new key first in the key
// variable, `state reseal`, then the old key can go.
func TestStateResealCommand(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.db")
	oldKey, newKey := randomKey(t), randomKey(t)
	keys, _ := bridge.LoadKeys(oldKey, "")
	s, err := bridge.OpenStore(path, keys...)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(bridge.Record{UserID: "u1", Client: "c1", Token: "tok", Expiry: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	cfg := filepath.Join(dir, "bridge.yaml")
	y := fmt.Sprintf(`directus: {url: "http://127.0.0.1:1"}
state: {path: %q}
issuers: [{name: a, issuer: "https://a.example/", audiences: [x]}]
rules: [{name: r, issuer: a, all_scopes: [s], role: R}]
`, path)
	if err := os.WriteFile(cfg, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	// It needs neither the Directus token nor the admin token.
	t.Setenv("DIRECTUS_BRIDGE_DIRECTUS_TOKEN", "")
	os.Unsetenv("DIRECTUS_BRIDGE_DIRECTUS_TOKEN")
	t.Setenv("DIRECTUS_BRIDGE_STATE_KEY", newKey+","+oldKey)
	var out, errOut strings.Builder
	if code := run([]string{"state", "reseal", "-config", cfg}, &out, &errOut); code != 0 {
		t.Fatalf("state reseal: exit %d: %s", code, errOut.String())
	}
	if !strings.Contains(out.String(), "1 record resealed") {
		t.Fatalf("output: %q", out.String())
	}
	if strings.Contains(out.String()+errOut.String(), "tok") {
		t.Fatal("a token was printed")
	}
	keys, _ = bridge.LoadKeys(newKey, "")
	s, err = bridge.OpenStore(path, keys...)
	if err != nil {
		t.Fatalf("the new key alone after reseal: %v", err)
	}
	defer s.Close()
	if r, _ := s.Get("u1"); r.Token != "tok" {
		t.Fatalf("token after reseal: %q", r.Token)
	}
	// A second run has nothing to do.
	s.Close()
	out.Reset()
	if code := run([]string{"state", "reseal", "-config", cfg}, &out, &errOut); code != 0 || !strings.Contains(out.String(), "0 records resealed") {
		t.Fatalf("second run: exit %d, %q", code, out.String())
	}
}
