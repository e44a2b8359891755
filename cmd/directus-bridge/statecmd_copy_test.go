package main

import (
	"bytes"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/directus-bridge/directus-bridge/bridge"
	"github.com/directus-bridge/directus-bridge/bridge/state"
	"github.com/directus-bridge/directus-bridge/bridge/state/boltstate"
)

// copyConfig writes a configuration whose state block is state, and
// nothing the copy does not need valid (no issuer, no rule, no token).
func copyConfig(t *testing.T, dir, name, stateBlock string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	y := "directus: {url: \"http://127.0.0.1:1\"}\nstate: " + stateBlock + "\n"
	if err := os.WriteFile(p, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// sourceState writes a bbolt state at path, sealed with key, holding n
// records with live tokens and the activity cursor 42.
func sourceState(t *testing.T, path, key string, n int) {
	t.Helper()
	keys, err := bridge.LoadKeys(key, "")
	if err != nil {
		t.Fatal(err)
	}
	s, err := bridge.OpenStore(path, keys...)
	if err != nil {
		t.Fatal(err)
	}
	var rs []bridge.Record
	for i := range n {
		rs = append(rs, bridge.Record{UserID: fmt.Sprintf("u%d", i), Client: fmt.Sprintf("c%d", i), Token: fmt.Sprintf("secret-token-%d", i), Expiry: time.Now().Add(time.Hour)})
	}
	if err := s.PutAll(rs); err != nil {
		t.Fatal(err)
	}
	if err := s.SetCursor(42); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// boltContents reads the records and meta values of a bbolt state as they
// are (sealed).
func boltContents(t *testing.T, path string) map[string][]byte {
	t.Helper()
	b, err := boltstate.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	m := map[string][]byte{}
	if err := b.Load(t.Context(), func(k string, v []byte) error {
		m[k] = bytes.Clone(v)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, k := range state.MetaKeys {
		if v, ok, err := b.Meta(t.Context(), k); err != nil {
			t.Fatal(err)
		} else if ok {
			m["meta:"+k] = v
		}
	}
	return m
}

func copyCmd(args ...string) (code int, stdout, stderr string) {
	var out, errOut strings.Builder
	code = run(append([]string{"state", "copy"}, args...), &out, &errOut)
	return code, out.String(), errOut.String()
}

func noDirectusToken(t *testing.T) {
	t.Setenv("DIRECTUS_BRIDGE_DIRECTUS_TOKEN", "")
	os.Unsetenv("DIRECTUS_BRIDGE_DIRECTUS_TOKEN")
}

// bbolt → bbolt: the records and the cursor are there, the destination's
// key opens the tokens, a second copy into it is refused.
func TestStateCopyCommand(t *testing.T) {
	noDirectusToken(t)
	dir := t.TempDir()
	key := randomKey(t)
	t.Setenv("DIRECTUS_BRIDGE_STATE_KEY", key)
	oldPath, newPath := filepath.Join(dir, "old.db"), filepath.Join(dir, "new", "new.db")
	sourceState(t, oldPath, key, 1201)
	from := copyConfig(t, dir, "old.yaml", fmt.Sprintf("{path: %q}", oldPath))
	to := copyConfig(t, dir, "new.yaml", fmt.Sprintf("{path: %q}", newPath))

	code, out, errOut := copyCmd("-from", from, "-config", to)
	if code != 0 {
		t.Fatalf("state copy: exit %d: %s", code, errOut)
	}
	want := fmt.Sprintf("copied 1201 records and the activity cursor from bbolt (%s) to bbolt (%s)\n", oldPath, newPath)
	if out != want {
		t.Fatalf("output:\n%q\nwant\n%q", out, want)
	}
	if strings.Contains(out+errOut, "secret-token") || strings.Contains(out+errOut, key) {
		t.Fatal("a token or the key was printed")
	}
	if fi, err := os.Stat(newPath); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("destination file: %v, %v", fi, err)
	}

	keys, _ := bridge.LoadKeys(key, "")
	s, err := bridge.OpenStore(newPath, keys...)
	if err != nil {
		t.Fatalf("open the copy with the key: %v", err)
	}
	if s.Len() != 1201 {
		t.Fatalf("copy holds %d records, want 1201", s.Len())
	}
	if r, ok := s.Get("u700"); !ok || r.Token != "secret-token-700" || r.Client != "c700" {
		t.Fatalf("copied record: %+v, %v", r, ok)
	}
	if c, ok := s.Cursor(); !ok || c != 42 {
		t.Fatalf("copied cursor: %d, %v; want 42", c, ok)
	}
	if s.LiveTokens(time.Now()) != 1201 {
		t.Fatalf("live tokens in the copy: %d", s.LiveTokens(time.Now()))
	}
	s.Close()

	// Copying again into it is refused, and leaves it as it was.
	before := boltContents(t, newPath)
	code, out, errOut = copyCmd("-from", from, "-config", to)
	if code != 1 || out != "" || !strings.Contains(errOut, "is not empty") || !strings.Contains(errOut, newPath) {
		t.Fatalf("second copy: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if after := boltContents(t, newPath); !maps.EqualFunc(after, before, bytes.Equal) {
		t.Fatal("a refused copy changed the destination")
	}
}

// The destination's key must open the source's tokens: checked before
// anything is written. A missing key file is not created.
func TestStateCopyWrongKey(t *testing.T) {
	noDirectusToken(t)
	dir := t.TempDir()
	key := randomKey(t)
	os.Unsetenv("DIRECTUS_BRIDGE_STATE_KEY")
	t.Setenv("OTHER_KEY", randomKey(t))
	oldPath := filepath.Join(dir, "old.db")
	sourceState(t, oldPath, key, 3)
	from := copyConfig(t, dir, "old.yaml", fmt.Sprintf("{path: %q}", oldPath))

	for _, tc := range []struct {
		name, block, want string
	}{
		{"another key", `{path: %q, key_env: OTHER_KEY}`, "does not open the source's tokens"},
		{"no key file", `{path: %q}`, "does not exist"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			newPath := filepath.Join(t.TempDir(), "new.db")
			to := copyConfig(t, dir, "new.yaml", fmt.Sprintf(tc.block, newPath))
			code, out, errOut := copyCmd("-from", from, "-config", to)
			if code != 1 || out != "" || !strings.Contains(errOut, tc.want) {
				t.Fatalf("exit %d, stdout %q, stderr %q; want 1 and %q", code, out, errOut, tc.want)
			}
			if !strings.Contains(errOut, "source's state key") {
				t.Fatalf("stderr %q does not say which key is needed", errOut)
			}
			if _, err := os.Stat(newPath + ".key"); err == nil {
				t.Fatal("a key file was created")
			}
			if _, err := os.Stat(newPath); err == nil {
				if n := len(boltContents(t, newPath)); n != 0 {
					t.Fatalf("%d records written before the key was checked", n)
				}
			}
		})
	}

	// With the source's key file named, it works without the variable.
	newPath := filepath.Join(t.TempDir(), "new.db")
	if err := os.WriteFile(oldPath+".key", []byte(key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	to := copyConfig(t, dir, "new.yaml", fmt.Sprintf("{path: %q, key_file: %q}", newPath, oldPath+".key"))
	if code, out, errOut := copyCmd("-from", from, "-config", to); code != 0 || !strings.HasPrefix(out, "copied 3 records and the activity cursor") {
		t.Fatalf("with the source's key file: exit %d, %q, %q", code, out, errOut)
	}
}

func TestStateCopyRefusals(t *testing.T) {
	noDirectusToken(t)
	dir := t.TempDir()
	key := randomKey(t)
	t.Setenv("DIRECTUS_BRIDGE_STATE_KEY", key)
	oldPath := filepath.Join(dir, "old.db")
	sourceState(t, oldPath, key, 2)
	from := copyConfig(t, dir, "old.yaml", fmt.Sprintf("{path: %q}", oldPath))
	same := copyConfig(t, dir, "same.yaml", fmt.Sprintf("{path: %q}", filepath.Join(dir, ".", "old.db")))
	to := copyConfig(t, dir, "new.yaml", fmt.Sprintf("{path: %q}", filepath.Join(dir, "new.db")))
	badState := copyConfig(t, dir, "bad.yaml", "{driver: sqlite}")

	if code, _, errOut := copyCmd("-from", from, "-config", same); code != 1 || !strings.Contains(errOut, "the same state") {
		t.Fatalf("same state: exit %d, %q", code, errOut)
	}
	if code, _, errOut := copyCmd("-config", to); code != 2 || !strings.Contains(errOut, "-from") {
		t.Fatalf("no -from: exit %d, %q", code, errOut)
	}
	if code, _, errOut := copyCmd("-from", from, "-config", to, "extra"); code != 2 {
		t.Fatalf("extra argument: exit %d, %q", code, errOut)
	}
	if code, _, errOut := copyCmd("-from", badState, "-config", to); code != 1 || !strings.Contains(errOut, "state.driver") {
		t.Fatalf("invalid state block: exit %d, %q", code, errOut)
	}
	missing := copyConfig(t, dir, "missing.yaml", fmt.Sprintf("{path: %q}", filepath.Join(dir, "nope.db")))
	if code, _, errOut := copyCmd("-from", missing, "-config", to); code != 1 || !strings.Contains(errOut, "does not exist") {
		t.Fatalf("missing source file: exit %d, %q", code, errOut)
	}
	if _, err := os.Stat(filepath.Join(dir, "nope.db")); err == nil {
		t.Fatal("the missing source file was created")
	}

	var code int
	var errOut string
	// A state held by a running server: stop it first.
	old := boltstate.HoldTimeout
	boltstate.HoldTimeout = 100 * time.Millisecond
	t.Cleanup(func() { boltstate.HoldTimeout = old })
	held, err := boltstate.Open(oldPath)
	if err != nil {
		t.Fatal(err)
	}
	code, _, errOut = copyCmd("-from", from, "-config", to)
	held.Close()
	if code != 1 || !strings.Contains(errOut, "stop the server first") || !strings.Contains(errOut, oldPath) {
		t.Fatalf("held source: exit %d, %q", code, errOut)
	}

	code, out, errOut := copyCmd("-h")
	if code != 0 || !strings.Contains(out+errOut, "-from") || !strings.Contains(out+errOut, "exit codes") {
		t.Fatalf("-h: exit %d, %q", code, out+errOut)
	}
	var sout, serr strings.Builder
	if code := run([]string{"state", "-h"}, &sout, &serr); code != 0 || !strings.Contains(sout.String(), "state copy") {
		t.Fatalf("state -h: exit %d, %q", code, sout.String())
	}
}
