package main

import (
	"strings"
	"testing"
	"time"
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
