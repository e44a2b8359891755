package mapping_test

import (
	"math/rand/v2"
	"path"
	"testing"

	"github.com/directus-bridge/directus-bridge/mapping"
)

// refGlob is the reference for Glob: the textbook recursive definition,
// memoised so that patterns with many stars stay cheap. It works on runes,
// as Glob does, so that '?' is one character and not one byte.
func refGlob(pattern, s string) bool {
	p, t := []rune(pattern), []rune(s)
	type pos struct{ i, j int }
	memo := map[pos]bool{}
	var match func(i, j int) bool
	match = func(i, j int) bool {
		k := pos{i, j}
		if v, ok := memo[k]; ok {
			return v
		}
		var ok bool
		switch {
		case i == len(p):
			ok = j == len(t)
		case p[i] == '*':
			ok = match(i+1, j) || (j < len(t) && match(i, j+1))
		case p[i] == '?':
			ok = j < len(t) && match(i+1, j+1)
		case p[i] == '\\':
			// A lone trailing escape never matches.
			ok = i+1 < len(p) && j < len(t) && p[i+1] == t[j] && match(i+2, j+1)
		default:
			ok = j < len(t) && p[i] == t[j] && match(i+1, j+1)
		}
		memo[k] = ok
		return ok
	}
	return match(0, 0)
}

func TestGlob(t *testing.T) {
	tests := []struct {
		name    string
		pattern string
		s       string
		want    bool
	}{
		{name: "empty pattern empty string", pattern: "", s: "", want: true},
		{name: "empty pattern non-empty string", pattern: "", s: "a", want: false},
		{name: "non-empty pattern empty string", pattern: "a", s: "", want: false},
		{name: "literal equal", pattern: "svc-billing", s: "svc-billing", want: true},
		{name: "literal is not a prefix match", pattern: "svc", s: "svc-billing", want: false},
		{name: "literal is not a suffix match", pattern: "billing", s: "svc-billing", want: false},
		{name: "literal is case sensitive", pattern: "SVC", s: "svc", want: false},

		{name: "lone star matches empty", pattern: "*", s: "", want: true},
		{name: "lone star matches anything", pattern: "*", s: "anything at all", want: true},
		{name: "star at end", pattern: "svc-*", s: "svc-billing", want: true},
		{name: "star at end matches empty rest", pattern: "svc-*", s: "svc-", want: true},
		{name: "star at end needs prefix", pattern: "svc-*", s: "app-billing", want: false},
		{name: "star at start", pattern: "*-prod", s: "billing-prod", want: true},
		{name: "star at start needs suffix", pattern: "*-prod", s: "billing-dev", want: false},
		{name: "star in middle", pattern: "svc-*-prod", s: "svc-billing-prod", want: true},
		{name: "star in middle matches empty", pattern: "svc-*-prod", s: "svc--prod", want: true},
		{name: "star in middle needs both ends", pattern: "svc-*-prod", s: "svc-billing-dev", want: false},
		{name: "star in middle backtracks", pattern: "a*b", s: "abxb", want: true},
		{name: "star in middle backtracks and fails", pattern: "a*b", s: "abxbx", want: false},
		{name: "two stars", pattern: "*billing*", s: "svc-billing-prod", want: true},
		{name: "two stars no match", pattern: "*billing*", s: "svc-payments-prod", want: false},
		{name: "many stars", pattern: "a*b*c*d", s: "axxbyyczzd", want: true},
		{name: "many stars out of order", pattern: "a*b*c*d", s: "axxcyybzzd", want: false},
		{name: "consecutive stars", pattern: "a**b", s: "ab", want: true},
		{name: "only stars", pattern: "***", s: "", want: true},
		{name: "star then literal repeated", pattern: "*aab", s: "aaaab", want: true},

		{name: "question mark one char", pattern: "svc-?", s: "svc-1", want: true},
		{name: "question mark not zero chars", pattern: "svc-?", s: "svc-", want: false},
		{name: "question mark not two chars", pattern: "svc-?", s: "svc-12", want: false},
		{name: "question mark matches star literally", pattern: "?", s: "*", want: true},
		{name: "question mark with star", pattern: "?*", s: "", want: false},
		{name: "question mark with star nonempty", pattern: "?*", s: "x", want: true},
		{name: "star then question marks", pattern: "*??", s: "ab", want: true},
		{name: "star then question marks too short", pattern: "*??", s: "a", want: false},

		{name: "escaped star is literal", pattern: `a\*b`, s: "a*b", want: true},
		{name: "escaped star is not a wildcard", pattern: `a\*b`, s: "axxb", want: false},
		{name: "escaped star at end", pattern: `svc\*`, s: "svc*", want: true},
		{name: "escaped star at end not empty", pattern: `svc\*`, s: "svc", want: false},
		{name: "escaped question mark is literal", pattern: `a\?`, s: "a?", want: true},
		{name: "escaped question mark is not a wildcard", pattern: `a\?`, s: "ab", want: false},
		{name: "escaped backslash", pattern: `a\\b`, s: `a\b`, want: true},
		{name: "escaped backslash needs backslash", pattern: `a\\b`, s: `axb`, want: false},
		{name: "escaped ordinary char", pattern: `\a`, s: "a", want: true},
		{name: "escaped star after star", pattern: `*\*`, s: "abc*", want: true},
		{name: "escaped star after star needs star", pattern: `*\*`, s: "abc", want: false},
		{name: "lone trailing escape never matches", pattern: `a\`, s: `a\`, want: false},
		{name: "lone trailing escape never matches empty", pattern: `\`, s: "", want: false},

		{name: "slash is ordinary for star", pattern: "spiffe://example.org/*", s: "spiffe://example.org/ns/prod/sa/billing", want: true},
		{name: "slash is ordinary for question mark", pattern: "a?b", s: "a/b", want: true},
		{name: "url client id", pattern: "https://*.example.com/*", s: "https://api.example.com/client/1", want: true},

		{name: "unicode literal", pattern: "équipe-ü", s: "équipe-ü", want: true},
		{name: "question mark is one rune not one byte", pattern: "?", s: "é", want: true},
		{name: "question mark on four-byte rune", pattern: "a?c", s: "a😀c", want: true},
		{name: "two question marks do not match one rune", pattern: "??", s: "é", want: false},
		{name: "star over unicode", pattern: "*ü*", s: "grüße", want: true},
		{name: "escaped unicode", pattern: `\é`, s: "é", want: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := mapping.Glob(tt.pattern, tt.s); got != tt.want {
				t.Errorf("Glob(%q, %q) = %v, want %v", tt.pattern, tt.s, got, tt.want)
			}
			if got := refGlob(tt.pattern, tt.s); got != tt.want {
				t.Errorf("refGlob(%q, %q) = %v, want %v (the reference disagrees with the table)", tt.pattern, tt.s, got, tt.want)
			}
		})
	}
}

// TestGlobSlashDiffersFromPathMatch pins the reason Glob exists: path.Match
// stops '*' at '/', which would make "spiffe://x/*" useless for client ids.
func TestGlobSlashDiffersFromPathMatch(t *testing.T) {
	const pattern, s = "team/*", "team/a/b"
	if ok, _ := path.Match(pattern, s); ok {
		t.Fatalf("path.Match(%q, %q) = true, this test assumes it is false", pattern, s)
	}
	if !mapping.Glob(pattern, s) {
		t.Errorf("Glob(%q, %q) = false, want true ('/' is an ordinary character)", pattern, s)
	}
}

// randString draws up to max runes from alphabet.
func randString(r *rand.Rand, alphabet []rune, max int) string {
	n := r.IntN(max + 1)
	out := make([]rune, n)
	for i := range out {
		out[i] = alphabet[r.IntN(len(alphabet))]
	}
	return string(out)
}

// TestGlobAgainstReference compares Glob with refGlob on random patterns and
// strings over a small alphabet, where matches and near misses are common.
func TestGlobAgainstReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	patternAlphabet := []rune(`ab*?\é/`)
	stringAlphabet := []rune(`ab*?\é/`)
	const n = 20000
	matched := 0
	for range n {
		p := randString(r, patternAlphabet, 8)
		s := randString(r, stringAlphabet, 10)
		got, want := mapping.Glob(p, s), refGlob(p, s)
		if got != want {
			t.Fatalf("Glob(%q, %q) = %v, reference says %v", p, s, got, want)
		}
		if got {
			matched++
		}
	}
	// Guard against a generator that only ever produces non-matches.
	if matched < n/50 {
		t.Errorf("only %d of %d random cases matched; the generator is too weak to test anything", matched, n)
	}
}

// TestGlobLongInput checks that the one-backtrack matcher stays fast on the
// inputs that make naive recursive matchers exponential.
func TestGlobLongInput(t *testing.T) {
	s := make([]rune, 10000)
	for i := range s {
		s[i] = 'a'
	}
	pattern := "*a*a*a*a*a*a*a*a*a*a*b"
	if mapping.Glob(pattern, string(s)) {
		t.Errorf("Glob(%q, a×10000) = true, want false", pattern)
	}
	if !mapping.Glob("*a*a*a*a*a*a*a*a*a*a", string(s)) {
		t.Errorf("Glob(*a×10, a×10000) = false, want true")
	}
}
