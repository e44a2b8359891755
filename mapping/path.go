package mapping

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Path names a claim: a plain name ("team", "https://example.com/tenant")
// is a top-level claim of that exact name; a name starting with "/" is a
// JSON Pointer (RFC 6901) into the claims, so that nested members are named
// without ambiguity ("/realm_access/roles", "/kubernetes.io/namespace"),
// with "~1" for a "/" and "~0" for a "~" inside a member name. A token that
// is a decimal index ("/groups/0") selects a list element. The zero Path
// names nothing.
type Path struct {
	text string
}

// maxPathTokens bounds a pointer's depth: no issuer nests claims deeper,
// and a bound keeps a lookup's cost known.
const maxPathTokens = 32

// ParsePath reads a claim name as written in the configuration. An empty
// name, a pointer with an empty token ("/a//b", "/a/") or a "~" not
// followed by 0 or 1 is refused.
func ParsePath(s string) (Path, error) {
	if s == "" {
		return Path{}, errors.New("empty claim name")
	}
	if s[0] != '/' {
		return Path{text: s}, nil
	}
	parts := strings.Split(s[1:], "/")
	if len(parts) > maxPathTokens {
		return Path{}, fmt.Errorf("claim path %q is deeper than %d members", s, maxPathTokens)
	}
	for i, p := range parts {
		if p == "" {
			return Path{}, fmt.Errorf("claim path %q has an empty member name (at /%s)", s, strings.Join(parts[:i+1], "/"))
		}
		for j := 0; j < len(p); j++ {
			if p[j] == '~' && (j+1 == len(p) || (p[j+1] != '0' && p[j+1] != '1')) {
				return Path{}, fmt.Errorf("claim path %q has a ~ not followed by 0 or 1 (write ~0 for ~, ~1 for /)", s)
			}
		}
	}
	return Path{text: s}, nil
}

// MustPath is ParsePath for names known to be valid; it panics otherwise.
func MustPath(s string) Path {
	p, err := ParsePath(s)
	if err != nil {
		panic(err)
	}
	return p
}

// String is the path as written.
func (p Path) String() string { return p.text }

// Tokens are the member names (or list indices) the path steps through,
// unescaped: one, the name itself, for a plain name.
func (p Path) Tokens() []string {
	if p.text == "" {
		return nil
	}
	if p.text[0] != '/' {
		return []string{p.text}
	}
	parts := strings.Split(p.text[1:], "/")
	for i, t := range parts {
		parts[i] = unescape(t)
	}
	return parts
}

// Root is the top-level claim the path starts at.
func (p Path) Root() string {
	if p.text == "" || p.text[0] != '/' {
		return p.text
	}
	t, _, _ := strings.Cut(p.text[1:], "/")
	return unescape(t)
}

// Key is the path's canonical form, the same for every spelling of the
// same claim ("team" and "/team").
func (p Path) Key() string {
	if p.text == "" || p.text[0] == '/' {
		return p.text
	}
	return "/" + pointerEscaper.Replace(p.text)
}

var pointerEscaper = strings.NewReplacer("~", "~0", "/", "~1")

func unescape(t string) string {
	if !strings.Contains(t, "~") {
		return t
	}
	return strings.NewReplacer("~1", "/", "~0", "~").Replace(t)
}

// Lookup returns the value at p in claims (decoded JSON: string,
// json.Number or float64, bool, nil, []any, map[string]any) and whether it
// is there.
func (p Path) Lookup(claims map[string]any) (any, bool) { return lookup(claims, p.text) }

// lookup is Path.Lookup of a valid path's text, allocating nothing for
// names without escapes.
func lookup(claims map[string]any, s string) (any, bool) {
	if s == "" {
		return nil, false
	}
	if s[0] != '/' {
		v, ok := claims[s]
		return v, ok
	}
	rest := s[1:]
	var v any = claims
	for {
		t, more, found := strings.Cut(rest, "/")
		t = unescape(t)
		switch c := v.(type) {
		case map[string]any:
			var ok bool
			if v, ok = c[t]; !ok {
				return nil, false
			}
		case []any:
			i, ok := listIndex(t)
			if !ok || i >= len(c) {
				return nil, false
			}
			v = c[i]
		default:
			return nil, false
		}
		if !found {
			return v, true
		}
		rest = more
	}
}

// listIndex reads an RFC 6901 array index: decimal digits, no leading zero.
func listIndex(t string) (int, bool) {
	if t == "" || len(t) > 9 || (len(t) > 1 && t[0] == '0') {
		return 0, false
	}
	n := 0
	for i := 0; i < len(t); i++ {
		if t[i] < '0' || t[i] > '9' {
			return 0, false
		}
		n = n*10 + int(t[i]-'0')
	}
	return n, true
}

// Scalar renders a claim value compared with a pattern: a string as it is,
// a number without exponent or float noise (123, not 1.23e+02; 1.0 is 1), a
// boolean as true or false. Null, lists and objects are no scalar.
func Scalar(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, true
	case bool:
		return strconv.FormatBool(x), true
	case json.Number:
		return numberText(string(x)), true
	case float64:
		return floatText(x, ""), true
	case int:
		return strconv.Itoa(x), true
	case int64:
		return strconv.FormatInt(x, 10), true
	}
	return "", false
}

// numberText is a JSON number's text as compared: an integer as written
// (exact at any size); any other form as its value when that is an integer
// below 2^53 or a plain decimal, else as written.
func numberText(s string) string {
	digits := strings.TrimPrefix(s, "-")
	if digits != "" && strings.Trim(digits, "0123456789") == "" {
		if s == "-0" {
			return "0"
		}
		return s
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return s
	}
	return floatText(f, s)
}

func floatText(f float64, literal string) string {
	switch {
	case math.IsNaN(f) || math.IsInf(f, 0):
		return strconv.FormatFloat(f, 'g', -1, 64)
	case f == math.Trunc(f) && math.Abs(f) < 1<<53:
		return strconv.FormatInt(int64(f), 10)
	case math.Abs(f) >= 1e-6 && math.Abs(f) < 1e21:
		return strconv.FormatFloat(f, 'f', -1, 64)
	case literal != "":
		return literal
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}

// matchValue reports whether the claim value v, or one scalar element of
// it when it is a list, matches the glob pattern. An object never matches.
func matchValue(pattern string, v any) bool {
	if list, ok := v.([]string); ok { // normalised claims
		for _, e := range list {
			if Glob(pattern, e) {
				return true
			}
		}
		return false
	}
	if list, ok := v.([]any); ok {
		for _, e := range list {
			if s, ok := Scalar(e); ok && Glob(pattern, s) {
				return true
			}
		}
		return false
	}
	s, ok := Scalar(v)
	return ok && Glob(pattern, s)
}
