package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestStackScriptsCheck runs `stack.sh check` (the check every stack.sh
// command makes before it installs or starts anything) with a PATH that
// lacks some tools, and an empty or a filled install cache. It needs no
// stack and takes well under a second.
func TestStackScriptsCheck(t *testing.T) {
	script := filepath.Join(repoRoot(t), "testdata", "stack", "stack.sh")
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("bash not found")
	}
	t.Cleanup(func() {
		for _, dir := range pathsWithout {
			os.RemoveAll(dir)
		}
	})
	emptyCache := t.TempDir()
	warmCache := filledCache(t, "node22", "directus12", "directus11", "idp", "sdk", "hook")

	tests := []struct {
		name    string
		args    []string
		without []string          // commands left out of PATH
		env     map[string]string // besides PATH, HOME and DIRECTUS_BRIDGE_CACHE
		cache   string
		wantRC  int
		want    []string // lines (substrings) the output must have
		notWant []string // substrings the output must not have
	}{
		{
			name: "up, cold cache, no g++ and no flock", args: []string{"check", "up"},
			without: []string{"g++", "flock"}, cache: emptyCache, wantRC: 1,
			want: []string{
				"missing: g++ (build-essential): C++ compiler",
				"missing: flock (util-linux):",
				"2 prerequisite(s) of 'up' (directus12-postgres,directus11-sqlite,idp) missing; Debian/Ubuntu: apt-get install util-linux build-essential",
			},
		},
		{
			name: "install, cold cache, every missing one is named", args: []string{"check", "install"},
			without: []string{"g++", "make", "python3", "npm", "node", "flock"}, cache: emptyCache, wantRC: 1,
			want: []string{
				"missing: g++ (build-essential)", "missing: make (build-essential)",
				"missing: python3 (python3)", "missing: npm (npm)", "missing: node (nodejs)",
				"missing: flock (util-linux)",
				"6 prerequisite(s) of 'install' (directus12-postgres,directus11-sqlite,idp) missing",
			},
		},
		{
			name: "up, warm cache: no compiler or npm needed", args: []string{"check", "up"},
			without: []string{"g++", "make", "npm", "flock"}, cache: warmCache, wantRC: 1,
			want:    []string{"missing: flock (util-linux)"},
			notWant: []string{"g++", "make (", "npm ("},
		},
		{
			name: "up without PostgreSQL", args: []string{"check", "up"},
			env:   map[string]string{"DIRECTUS_BRIDGE_PG_BIN": "/nonexistent"},
			cache: warmCache, wantRC: 1,
			want: []string{"missing: PostgreSQL 15 initdb, pg_ctl, postgres, psql (postgresql-15)"},
		},
		{
			name: "a subset without directus12-postgres needs no PostgreSQL", args: []string{"check", "up", "--only", "directus11-sqlite,idp"},
			env:     map[string]string{"DIRECTUS_BRIDGE_PG_BIN": "/nonexistent"},
			cache:   warmCache,
			notWant: []string{"postgresql-15", "PostgreSQL"},
		},
		{
			name: "the demo's subset, from the environment", args: []string{"check", "install"},
			env:     map[string]string{"DIRECTUS_BRIDGE_STACK_ONLY": "directus12-postgres,idp"},
			without: []string{"g++", "flock"}, cache: filledCache(t, "node22", "directus12", "idp", "sdk"), wantRC: 1,
			want:    []string{"missing: flock", "1 prerequisite(s) of 'install' (directus12-postgres,idp) missing"},
			notWant: []string{"g++"},
		},
		{
			name: "down needs none of them", args: []string{"check", "down"},
			without: []string{"g++", "make", "python3", "npm", "node", "flock", "setsid", "runuser", "curl"},
			cache:   emptyCache,
			want:    []string{"all prerequisites of 'down' found"},
		},
		{
			name: "status needs curl", args: []string{"check", "status"},
			without: []string{"curl", "g++", "flock"}, cache: emptyCache, wantRC: 1,
			want:    []string{"missing: curl (curl)", "1 prerequisite(s) of 'status' (directus12-postgres,directus11-sqlite,idp) missing; Debian/Ubuntu: apt-get install curl"},
			notWant: []string{"g++", "flock"},
		},
		{
			name: "up itself checks before it installs", args: []string{"up", "{tmp}/stack"},
			without: []string{"g++", "flock"}, cache: emptyCache, wantRC: 1,
			want:    []string{"missing: g++ (build-essential)", "missing: flock (util-linux)"},
			notWant: []string{"installing"},
		},
		{
			name: "unknown name in --only", args: []string{"check", "up", "--only", "directus13"},
			cache: emptyCache, wantRC: 2,
			want: []string{"unknown --only name 'directus13'"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tmp := t.TempDir()
			args := []string{script}
			for _, a := range tc.args {
				args = append(args, strings.ReplaceAll(a, "{tmp}", tmp))
			}
			cmd := exec.Command(bash, args...)
			cmd.Env = []string{
				"PATH=" + pathWithout(t, tc.without...),
				"HOME=" + tmp,
				"DIRECTUS_BRIDGE_CACHE=" + tc.cache,
			}
			for k, v := range tc.env {
				cmd.Env = append(cmd.Env, k+"="+v)
			}
			out, err := cmd.CombinedOutput()
			rc := 0
			var exit *exec.ExitError
			if errors.As(err, &exit) {
				rc = exit.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if rc != tc.wantRC {
				t.Errorf("exit code %d, want %d\n%s", rc, tc.wantRC, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(string(out), w) {
					t.Errorf("output has %q:\n%s", w, out)
				}
			}
			for _, name := range tc.without {
				if n := strings.Count(string(out), "missing: "+name+" ("); n > 1 {
					t.Errorf("%s named %d times:\n%s", name, n, out)
				}
			}
			if entries, _ := os.ReadDir(tc.cache); tc.cache == emptyCache && len(entries) > 0 {
				t.Errorf("the check wrote into the cache: %v", entries)
			}
		})
	}
}

// pathWithout is a PATH of one folder with links to every command of the
// usual folders except the named ones.
func pathWithout(t *testing.T, without ...string) string {
	t.Helper()
	key := strings.Join(without, " ")
	if dir, ok := pathsWithout[key]; ok {
		return dir
	}
	dir, err := os.MkdirTemp("", "stackscripts-path-")
	if err != nil {
		t.Fatal(err)
	}
	pathsWithout[key] = dir
	skip := map[string]bool{}
	for _, w := range without {
		skip[w] = true
	}
	for _, d := range []string{"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"} {
		entries, err := os.ReadDir(d)
		if err != nil {
			continue
		}
		for _, e := range entries {
			name := e.Name()
			if skip[name] {
				continue
			}
			link := filepath.Join(dir, name)
			if _, err := os.Lstat(link); err == nil {
				continue // an earlier folder has it, as PATH would
			}
			if err := os.Symlink(filepath.Join(d, name), link); err != nil {
				t.Fatal(err)
			}
		}
	}
	return dir
}

// pathsWithout are the folders pathWithout made, by the commands they lack.
var pathsWithout = map[string]string{}

// filledCache is an install cache in which pkgs are complete, as stack.sh
// names them: <pkg>-<first 12 hex of sha256(package-lock.json)>.
func filledCache(t *testing.T, pkgs ...string) string {
	t.Helper()
	cache := t.TempDir()
	for _, pkg := range pkgs {
		lock, err := os.ReadFile(filepath.Join(repoRoot(t), "testdata", "stack", pkg, "package-lock.json"))
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(lock)
		dir := filepath.Join(cache, pkg+"-"+hex.EncodeToString(sum[:])[:12])
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, ".install-complete"), []byte("test\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return cache
}

func TestRemoveStaleBinaries(t *testing.T) {
	tmp := t.TempDir()
	old, fresh, other := filepath.Join(tmp, "directus-bridge-bin1"), filepath.Join(tmp, "directus-bridge-bin2"), filepath.Join(tmp, "keep-me")
	for _, d := range []string{old, fresh, other} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	past := time.Now().Add(-2 * time.Hour)
	for _, d := range []string{old, other} {
		if err := os.Chtimes(d, past, past); err != nil {
			t.Fatal(err)
		}
	}
	removeStaleBinaries(tmp, time.Hour)
	if _, err := os.Stat(old); !os.IsNotExist(err) {
		t.Errorf("a stale binary folder was kept")
	}
	for _, d := range []string{fresh, other} {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("%s was removed: %v", d, err)
		}
	}
}

// A DIR made by mktemp -d (mode 0700, as with-stack.sh makes it) passes the
// check: up makes DIR itself reachable; only its parents must be.
func TestStackScriptsCheckMktempDir(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the postgres-user reach check runs as root only")
	}
	if _, err := exec.LookPath("runuser"); err != nil {
		t.Skip("no runuser")
	}
	dir, err := os.MkdirTemp("", "directus-bridge-stack.")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	out, err := exec.Command("bash", "../testdata/stack/stack.sh", "check", "up", dir).CombinedOutput()
	if err != nil && strings.Contains(string(out), "access to") {
		t.Fatalf("a mktemp -d DIR is refused:\n%s", out)
	}
}
