package mapping

// Glob reports whether s matches pattern: '*' matches any run of characters,
// '?' one character, '\' escapes the next one. Unlike path.Match, '/' is an
// ordinary character, since client ids and claim values are not paths.
func Glob(pattern, s string) bool {
	p, t := []rune(pattern), []rune(s)
	// Iterative matcher with one backtrack point for the last '*'.
	pi, ti, star, mark := 0, 0, -1, 0
	for ti < len(t) {
		switch {
		case pi < len(p) && p[pi] == '*':
			star, mark = pi, ti
			pi++
		case pi < len(p) && p[pi] == '\\' && pi+1 < len(p) && p[pi+1] == t[ti]:
			pi += 2
			ti++
		case pi < len(p) && p[pi] != '\\' && (p[pi] == '?' || p[pi] == t[ti]):
			pi++
			ti++
		case star >= 0:
			pi = star + 1
			mark++
			ti = mark
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}

// validGlob reports whether pattern does not end in a lone escape.
func validGlob(pattern string) bool {
	escaped := false
	for _, c := range pattern {
		escaped = !escaped && c == '\\'
	}
	return !escaped
}
