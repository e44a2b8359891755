package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/directus-bridge/directus-bridge/bridge"
)

func TestProxyVerdicts(t *testing.T) {
	good := proxyMeasure{directRate: 350, proxyRate: 340, ratios: []float64{0.93, 0.97, 0.99},
		directP99: 40 * time.Millisecond, proxyP99: 41 * time.Millisecond}
	tests := []struct {
		name string
		m    proxyMeasure
		own  *proxyMeasure // against a no-op upstream
		hook *hookFigure
		want []bool // ratio, p99 added, [own p99 added,] [hook,] clean
	}{
		{name: "all met, with the hook", m: good, hook: &hookMeasured, want: []bool{true, true, true, true}},
		{name: "all met, no hook figure", m: good, want: []bool{true, true, true}},
		{name: "median decides, not the worst round", m: func() proxyMeasure {
			m := good
			m.ratios = []float64{0.5, 0.91, 0.95}
			return m
		}(), want: []bool{true, true, true}},
		{name: "median short", m: func() proxyMeasure {
			m := good
			m.ratios = []float64{0.85, 0.89, 0.99}
			return m
		}(), want: []bool{false, true, true}},
		{name: "p99 added exactly 2ms misses", m: func() proxyMeasure {
			m := good
			m.proxyP99 = m.directP99 + 2*time.Millisecond
			return m
		}(), want: []bool{true, false, true}},
		{name: "p99 below direct passes", m: func() proxyMeasure {
			m := good
			m.proxyP99 = m.directP99 - time.Millisecond
			return m
		}(), want: []bool{true, true, true}},
		{name: "twice the hook's low figure is not enough", m: func() proxyMeasure {
			m := good
			m.proxyRate = 2*hookMeasured.low + 1 // below 2 × its best
			return m
		}(), hook: &hookMeasured, want: []bool{true, true, false, true}},
		{name: "twice the hook's best passes", m: func() proxyMeasure {
			m := good
			m.proxyRate = 2 * hookMeasured.high
			return m
		}(), hook: &hookMeasured, want: []bool{true, true, true, true}},
		{name: "own cost met", m: good, own: &proxyMeasure{directP99: time.Millisecond, proxyP99: 2 * time.Millisecond, ratios: []float64{0.5}},
			hook: &hookMeasured, want: []bool{true, true, true, true, true}},
		{name: "own tail over 2ms", m: good, own: &proxyMeasure{directP99: time.Millisecond, proxyP99: 4 * time.Millisecond, ratios: []float64{0.5}},
			want: []bool{true, true, false, true}},
		{name: "a failed request against the no-op counts", m: good, own: &proxyMeasure{failed: 1, ratios: []float64{0.5}},
			want: []bool{true, true, true, false}},
		{name: "the hook measured: its ratios decide, not the figure", m: func() proxyMeasure {
			m := good
			m.proxyRate = 2 * hookMeasured.high // 2× the figure's best
			m.hookRate, m.hookRatios = 200, []float64{1.5, 1.7, 2.6}
			return m
		}(), hook: &hookMeasured, want: []bool{true, true, false, true}},
		{name: "the hook measured, twice its median", m: func() proxyMeasure {
			m := good
			m.hookRate, m.hookRatios = 150, []float64{1.9, 2.0, 2.4}
			return m
		}(), want: []bool{true, true, true, true}},
		{name: "a failed hook request misses the hook goal", m: func() proxyMeasure {
			m := good
			m.hookRate, m.hookRatios, m.hookFailed = 150, []float64{2.5}, 1
			return m
		}(), want: []bool{true, true, false, true}},
		{name: "a failed request", m: func() proxyMeasure {
			m := good
			m.failed = 1
			return m
		}(), want: []bool{true, true, false}},
		{name: "a token in the log", m: func() proxyMeasure {
			m := good
			m.secrets = true
			return m
		}(), want: []bool{true, true, false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vs := proxyVerdicts("Directus 11", tt.m, tt.own, tt.hook)
			if len(vs) != len(tt.want) {
				t.Fatalf("got %d verdicts, want %d: %v", len(vs), len(tt.want), vs)
			}
			for i, v := range vs {
				if v.ok != tt.want[i] {
					t.Errorf("verdict %d: ok %v, want %v: %s", i, v.ok, tt.want[i], v)
				}
				if !strings.HasPrefix(v.what, "Directus 11 proxy: ") {
					t.Errorf("verdict %d does not name its Directus: %q", i, v.what)
				}
			}
		})
	}
	if vs := proxyVerdicts("Directus 12", proxyMeasure{}, nil, nil); len(vs) != 1 || vs[0].ok {
		t.Errorf("no round measured: got %v, want one miss", vs)
	}
}

func TestHookFor(t *testing.T) {
	for _, tt := range []struct {
		version string
		want    bool
	}{{"11.17.4", true}, {"12.4.0", false}, {"110.0.0", false}, {"", false}} {
		if got := hookFor(tt.version) != nil; got != tt.want {
			t.Errorf("hookFor(%q) != nil is %v, want %v", tt.version, got, tt.want)
		}
	}
}

func TestMeasureHook(t *testing.T) {
	sec := func(ok int) result { return result{ok: ok, elapsed: time.Second} }
	rounds := []proxyRound{
		{direct: sec(300), proxy: sec(280), hook: sec(100)},
		{direct: sec(200), proxy: sec(210), hook: sec(140)},
	}
	m := measure(rounds, logStats{})
	if len(m.hookRatios) != 2 || m.hookRatios[0] != 1.5 || m.hookRatios[1] != 2.8 {
		t.Errorf("hook ratios %v, want [1.5 2.8]", m.hookRatios)
	}
	if m.hookRate != 120 {
		t.Errorf("hook rate %v, want 120", m.hookRate)
	}
	if !hookMeasuredIn(rounds) || hookMeasuredIn([]proxyRound{{direct: sec(1), proxy: sec(1)}}) {
		t.Error("hookMeasuredIn: wrong")
	}
	if m := measure(rounds[:0], logStats{}); len(m.hookRatios) != 0 {
		t.Errorf("no rounds: hook ratios %v", m.hookRatios)
	}
}

// The hook's users are the bridge's with the NIL namespace: a team can
// switch and keep them.
func TestHookUserID(t *testing.T) {
	for _, sub := range []string{"svc@clients", "bridge-bench-x-hook-0@clients"} {
		if got, want := hookUserID(sub), bridge.UserID(uuid.Nil, nil, sub); got != want {
			t.Errorf("hookUserID(%q) = %s, want %s", sub, got, want)
		}
	}
}

func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{"http://x/": "'http://x/'", "a'b": `'a'\''b'`, "": "''"} {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestHookUnavailable(t *testing.T) {
	st := &stack{Dir: "/tmp/s", Script: "/x/stack.sh"}
	st.IdP.Issuers = map[string]issuer{"auth0": {Alg: "RS256"}}
	withHook := *st
	withHook.Hook = &struct {
		Dir string `json:"dir"`
	}{Dir: "/cache/hook-1"}
	tests := []struct {
		name    string
		st      *stack
		version string
		want    string // a part of the reason; "" = usable
	}{
		{"usable", &withHook, "11.17.4", ""},
		{"Directus 12", &withHook, "12.4.0", "Directus 11 only"},
		{"no hook in stack.json", st, "11.17.4", "no hook"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := hookUnavailable(&env{st: tt.st, d: directusInstance{Version: tt.version}})
			if (got == "") != (tt.want == "") || !strings.Contains(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// The hook package must stay loadable by Directus 11 with no build step.
func TestHookPackage(t *testing.T) {
	dir := filepath.Join("..", "..", "testdata", "stack", "hook")
	b, err := os.ReadFile(filepath.Join(dir, "package.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"type": "hook"`, `"path": "index.js"`, `"source": "index.js"`, `"host": "^11.0.0"`, `"type": "module"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("package.json lacks %s", want)
		}
	}
	for _, f := range []string{"index.js", "package-lock.json", "README.md"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Error(err)
		}
	}
}
