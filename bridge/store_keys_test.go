package bridge

import (
	"crypto/rand"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func newKey(t *testing.T) []byte {
	t.Helper()
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

// Rotating the sealing key: the first key seals, every key opens; Reseal
// rewrites what an older key sealed, after which the older key can go.
func TestStoreKeyRotation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	k1, k2 := newKey(t), newKey(t)
	exp := time.Now().Add(time.Hour)
	s, err := OpenStore(path, k1)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.PutAll([]Record{
		{UserID: "u1", Client: "c1", Token: "token-one", Expiry: exp},
		{UserID: "u2", Client: "c2", Token: "token-two", Expiry: exp, Maybe: []Candidate{{Token: "maybe-two", Expiry: exp}}},
		{UserID: "u3", Client: "c3"},
	}); err != nil {
		t.Fatal(err)
	}
	s.Close()

	// The new key first, the old one still there: everything opens, and the
	// store knows what the old key sealed.
	s, err = OpenStore(path, k2, k1)
	if err != nil {
		t.Fatalf("open with [new, old]: %v", err)
	}
	if r, _ := s.Get("u2"); r.Token != "token-two" || r.Maybe[0].Token != "maybe-two" {
		t.Fatalf("u2 after rotation: %+v", r)
	}
	if n := s.SealedByOlderKeys(); n != 2 {
		t.Fatalf("SealedByOlderKeys = %d, want 2 (u3 holds no token)", n)
	}
	// A write seals under the new key.
	r1, _ := s.Get("u1")
	r1.LastExchange = time.Now()
	if err := s.Put(r1); err != nil {
		t.Fatal(err)
	}
	if n := s.SealedByOlderKeys(); n != 1 {
		t.Fatalf("after a write: SealedByOlderKeys = %d, want 1", n)
	}
	n, err := s.Reseal()
	if err != nil || n != 1 {
		t.Fatalf("Reseal = %d, %v; want 1", n, err)
	}
	if n := s.SealedByOlderKeys(); n != 0 {
		t.Fatalf("after Reseal: SealedByOlderKeys = %d", n)
	}
	s.Close()

	// The old key can go now.
	s, err = OpenStore(path, k2)
	if err != nil {
		t.Fatalf("open with the new key only after Reseal: %v", err)
	}
	for id, want := range map[string]string{"u1": "token-one", "u2": "token-two"} {
		if r, _ := s.Get(id); r.Token != want {
			t.Fatalf("%s: token %q, want %q", id, r.Token, want)
		}
	}
	s.Close()
	// And the old key alone opens nothing.
	if _, err := OpenStore(path, k1); err == nil || !strings.Contains(err.Error(), "does not decrypt") {
		t.Fatalf("open with the retired key: %v", err)
	}
}

func TestLoadKeys(t *testing.T) {
	k1, k2 := newKey(t), newKey(t)
	b1, b2 := base64.StdEncoding.EncodeToString(k1), base64.StdEncoding.EncodeToString(k2)
	keys, err := LoadKeys(b2+", "+b1, "")
	if err != nil || len(keys) != 2 || string(keys[0]) != string(k2) || string(keys[1]) != string(k1) {
		t.Fatalf("LoadKeys(env of two) = %d keys, %v", len(keys), err)
	}
	file := filepath.Join(t.TempDir(), "state.key")
	if err := os.WriteFile(file, []byte(b2+"\n"+b1+"\n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	keys, err = LoadKeys("", file)
	if err != nil || len(keys) != 2 || string(keys[0]) != string(k2) {
		t.Fatalf("LoadKeys(file of two lines) = %d keys, %v", len(keys), err)
	}
	// A bad second key is an error naming its position, never its value.
	_, err = LoadKeys(b1+",c2VjcmV0LXZhbHVl", "")
	if err == nil || !strings.Contains(err.Error(), "key 2") || strings.Contains(err.Error(), "c2VjcmV0LXZhbHVl") {
		t.Fatalf("bad second key: %v", err)
	}
	if _, err := LoadKeys(b1+","+b1, ""); err == nil {
		t.Fatal("the same key twice was accepted")
	}
	// LoadKey keeps working: the sealing key.
	if k, err := LoadKey(b2+","+b1, ""); err != nil || string(k) != string(k2) {
		t.Fatalf("LoadKey = %v", err)
	}
}
