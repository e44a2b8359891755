package main

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// mergeBomb is a small file whose merge keys (<<) expand to 20^7 maps of
// 51 keys each: an alias bomb that goes through merges instead of values.
func mergeBomb() string {
	var b strings.Builder
	b.WriteString("x0: &a0 {")
	for i := 0; i < 50; i++ {
		fmt.Fprintf(&b, "k%d: %d, ", i, i)
	}
	b.WriteString("z: 1}\n")
	for l := 1; l < 8; l++ {
		fmt.Fprintf(&b, "x%d: &a%d {<<: [", l, l)
		for i := 0; i < 20; i++ {
			fmt.Fprintf(&b, "*a%d, ", l-1)
		}
		b.WriteString("]}\n")
	}
	b.WriteString(strings.Replace(validBase, "directus:\n", "directus:\n  <<: *a7\n", 1))
	return b.String()
}

func TestConfigCheckMergeBombCostsLittle(t *testing.T) {
	file := mergeBomb()
	done := make(chan []Problem, 1)
	go func() {
		_, ps := checkConfig([]byte(file))
		done <- ps
	}()
	select {
	case ps := <-done:
		found := false
		for _, p := range ps {
			if strings.Contains(p.Msg, "more than") || strings.Contains(p.Msg, "too deep") {
				found = true
			}
		}
		if !found {
			t.Errorf("a merge bomb of %d bytes is not reported as too large: %v", len(file), ps)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("checking a merge bomb of %d bytes takes more than 5s", len(file))
	}
}
